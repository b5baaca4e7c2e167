/* bpe — trains a byte-fallback BPE tokenizer in the SentencePiece style Gemma uses, and
 * writes it as a Hugging Face tokenizer.json that core/tokenizer loads like Gemma's own.
 *
 * What gets written has exactly the structure of Gemma's tokenizer.json (and of the
 * tests/tokenizer/tiny fixture): normalizer Replace " " -> "▁"; pre-tokenizer Split on " "
 * MergedWithPrevious (a no-op after the normalizer, so BPE sees whole lines, as in Gemma);
 * decoder Sequence [Replace "▁" -> " ", ByteFallback, Fuse]; model BPE with byte_fallback,
 * fuse_unk, unk_token "<unk>" and merges as [left, right] pairs; a TemplateProcessing
 * post-processor naming <bos>. The id layout:
 *
 *   0 <pad>  1 <eos>  2 <bos>  3 <unk>  4 <start_of_turn>  5 <end_of_turn>  6 "\n"
 *   7..262   <0x00>..<0xFF>     (byte fallback: any character the vocab lacks)
 *   263..    the corpus's characters, most frequent first (ties: smaller UTF-8 bytes first)
 *   then     one piece per merge, in merge order, until vocab_size ids exist
 *
 * Pad/eos/bos/unk keep Gemma's ids; the turn markers and "\n" come right after (Gemma has
 * them at 106..108, which would waste a hundred embedding rows of a tiny model). The seven
 * are added tokens (all special except "\n", which is a plain added token as in Gemma), so
 * encode splits them out before BPE.
 *
 * Training follows SentencePiece's word model: text is cut at added-token strings, spaces
 * become "▁", and each section is split into words *before* every "▁" ("How do I" ->
 * "How", "▁do", "▁I"). Words are counted; merges are learnt greedily, most frequent
 * adjacent pair first, ties broken by the smaller (left id, right id), with a max-heap
 * refreshed lazily (HF tokenizers' trainer does the same). Since "▁" only starts a word, no
 * merge ever spans a word boundary, so encoding whole lines (as the written pre-tokenizer
 * does) splits words exactly as training did. Bytes that are not valid UTF-8 count as
 * U+FFFD, one per byte (the encoder's repair groups some of them; this only shifts counts).
 *
 * Determinism: the output depends only on the texts (in the order added) and the options;
 * the same input gives the same bytes. Cost: O(total text) to count, then per merge work
 * proportional to the words holding the merged pair.
 *
 * Ownership: up_bpe_init allocates a trainer, up_bpe_free releases it; up_bpe_json's text
 * is malloc'd for the caller. Errors: every fallible function returns an up_status and
 * fills the caller's up_error (may be NULL); nothing is printed. */
#ifndef UP_BPE_H
#define UP_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

enum {
    UP_BPE_PAD_ID = 0,
    UP_BPE_EOS_ID = 1,
    UP_BPE_BOS_ID = 2,
    UP_BPE_UNK_ID = 3,
    UP_BPE_START_OF_TURN_ID = 4,
    UP_BPE_END_OF_TURN_ID = 5,
    UP_BPE_NEWLINE_ID = 6,
    UP_BPE_FIRST_BYTE_ID = 7,   /* <0x00>; <0xNN> is 7 + NN */
    UP_BPE_FIRST_CHAR_ID = 263, /* first corpus character */
};

typedef struct up_bpe_options {
    int vocab_size;      /* total ids wanted (specials + bytes + characters + merges); the
                            result has fewer only when pairs run out (see min_frequency) */
    int min_frequency;   /* stop when the best pair occurs fewer times; <= 0: 2 */
    int max_piece_chars; /* longest piece in characters (SentencePiece's max_piece_length);
                            0: 16, < 0: no limit */
    const char *const *required; /* NULL-terminated words that must be single pieces; NULL:
                            {"user", "model"}, Gemma's role names, so the chat template's
                            five post-instruction tokens stay five. Each is counted as if it
                            outnumbered all other words, so its merges come first. */
} up_bpe_options;

typedef struct up_bpe_stats {
    int vocab_size;     /* ids in the trained vocabulary */
    int n_chars;        /* distinct corpus characters (base pieces) */
    int n_merges;       /* merges learnt (>= pieces added: two merges may spell one piece) */
    int n_words;        /* distinct words */
    int64_t n_tokens;   /* word occurrences counted */
} up_bpe_stats;

typedef struct up_bpe up_bpe;

up_status up_bpe_init(up_bpe **out, up_error *err);
void up_bpe_free(up_bpe *b); /* NULL is fine */

/* Counts the words of one text (len bytes, any content; "\n" and special-token strings are
 * separators). UP_ERR_INVALID after up_bpe_train. */
up_status up_bpe_add_text(up_bpe *b, const char *text, size_t len, up_error *err);

/* up_bpe_add_text on a whole file's bytes. */
up_status up_bpe_add_file(up_bpe *b, const char *path, up_error *err);

/* Learns the vocabulary; once per trainer. UP_ERR_INVALID if vocab_size cannot hold the
 * specials, the 256 byte pieces and every corpus character (required words' included) or
 * the required words' merges, or if called twice. */
up_status up_bpe_train(up_bpe *b, const up_bpe_options *opt, up_error *err);

/* The tokenizer.json text (2-space indented, UTF-8, no trailing newline); *json malloc'd,
 * *len its length (may be NULL). UP_ERR_INVALID before up_bpe_train. */
up_status up_bpe_json(const up_bpe *b, char **json, size_t *len, up_error *err);

/* Writes up_bpe_json's text to path through a temporary file and a rename, so a reader
 * never sees half a file and an interrupted write leaves the old file. */
up_status up_bpe_save(const up_bpe *b, const char *path, up_error *err);

void up_bpe_stats_get(const up_bpe *b, up_bpe_stats *out);

#endif
