/* tokenizer — Hugging Face tokenizer.json (BPE) loader, encoder and decoder.
 *
 * Reads the `tokenizer.json` that Hugging Face `tokenizers` writes, for BPE models of the
 * SentencePiece family (Gemma-1/2/3, Llama-2 style): model.vocab {piece: id}, model.merges as
 * "a b" strings or [a, b] pairs (rank = position), byte_fallback ("<0xXX>" pieces for bytes
 * the vocab lacks), fuse_unk, unk_token, ignore_merges; added_tokens with their special,
 * lstrip, rstrip and normalized flags; normalizers Replace (string pattern), Prepend and
 * Sequence; pre-tokenizers Split (string pattern, every behaviour, invert) and Sequence;
 * decoders Replace, ByteFallback, Fuse, Strip and Sequence. Anything else (another model
 * type, a Regex pattern, NFKC, Metaspace, ByteLevel, dropout, single_word tokens, ...) fails
 * the load with UP_ERR_UNSUPPORTED naming the component, so an encoding is never silently
 * wrong. post_processor, truncation and padding are not applied: encode never adds BOS/EOS
 * (callers or the chat module add them), exactly as transformers does with
 * add_special_tokens=False.
 *
 * Semantics follow the Rust `tokenizers` crate (what transformers runs): added tokens are
 * matched leftmost-longest on the raw text (normalized=true ones on each normalized section),
 * then each remaining section is normalized, pre-tokenized and BPE-merged with a priority
 * queue (lowest rank first, leftmost among equals), O(n log n) in the section length.
 * Input that is not valid UTF-8 is first repaired the way WHATWG's TextDecoder does it (each
 * maximal invalid subpart becomes U+FFFD), so invalid bytes never crash and the ids equal
 * those of the decoded string. Decode runs the decoder chain; a byte run that is not valid
 * UTF-8 becomes one U+FFFD per byte token (as the Rust ByteFallback decoder does).
 *
 * BOS/EOS: read from tokenizer_config.json beside the file when present (bos_token,
 * eos_token), else BOS from a TemplateProcessing post_processor, else the usual piece names
 * ("<bos>", "<s>"; "<eos>", "</s>").
 *
 * Ownership: up_tokenizer_load* allocate the tokenizer; up_tokenizer_free releases it.
 * A loaded tokenizer is immutable, so encode/decode may run from many threads at once.
 * Arrays returned through out-parameters are malloc'd and owned by the caller (free()).
 * Strings returned by up_tokenizer_piece point into the tokenizer and live as long as it.
 * Errors: functions return an up_status and fill the caller's up_error (may be NULL) with a
 * message naming the file and the JSON path or token involved; nothing is printed. */
#ifndef UP_TOKENIZER_H
#define UP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct up_tokenizer up_tokenizer;

/* Loads a tokenizer.json file (and tokenizer_config.json beside it, if any, for BOS/EOS). */
up_status up_tokenizer_load(up_tokenizer **out, const char *path, up_error *err);

/* Finds DIR/tokenizer.json; UP_ERR_IO "no tokenizer.json in DIR (needed to encode text)" if
 * absent. */
up_status up_tokenizer_load_dir(up_tokenizer **out, const char *model_dir, up_error *err);

/* How the JSON text is handed to jansson. A single jansson pass over Gemma's 33 MB file
 * takes about a second, so large files are minified and their two huge members
 * (model.vocab, model.merges) cut into element-aligned chunks that are parsed in parallel.
 * Both paths build the same tokenizer; AUTO picks SPLIT for files over a few MB. */
typedef enum {
    UP_TOKENIZER_PARSE_AUTO = 0,
    UP_TOKENIZER_PARSE_WHOLE, /* one json_loadb over the text */
    UP_TOKENIZER_PARSE_SPLIT  /* minify + chunked parallel parse (falls back to WHOLE on
                                 anything it does not recognise, so errors read the same) */
} up_tokenizer_parse;

/* Loads from tokenizer.json text in memory (no tokenizer_config.json). `name` labels error
 * messages (e.g. the file it came from). */
up_status up_tokenizer_load_mem(up_tokenizer **out, const char *json /* (len) */, size_t len,
                                const char *name, up_tokenizer_parse how, up_error *err);

void up_tokenizer_free(up_tokenizer *tok);

/* Encodes text (no BOS added; special-token strings recognised). *ids malloc'd (non-NULL
 * even when *n_ids == 0). len is in bytes; the text need not be NUL-terminated nor valid
 * UTF-8. */
up_status up_tokenizer_encode(const up_tokenizer *tok, const char *text /* (len) */, size_t len,
                              int32_t **ids /* (*n_ids) */, int *n_ids, up_error *err);

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string; skip_special: drop special tokens.
 * An id outside [0, vocab_size) or with no piece is UP_ERR_INVALID. */
up_status up_tokenizer_decode(const up_tokenizer *tok, const int32_t *ids /* (n_ids) */, int n_ids,
                              int skip_special, char **text, up_error *err);

/* As up_tokenizer_decode, also giving the length (the text may hold NUL bytes, from <0x00>). */
up_status up_tokenizer_decode_n(const up_tokenizer *tok, const int32_t *ids /* (n_ids) */, int n_ids,
                                int skip_special, char **text /* (*len + 1) */, size_t *len, up_error *err);

/* One past the largest id (model vocab and added tokens). */
int up_tokenizer_vocab_size(const up_tokenizer *tok);
const char *up_tokenizer_piece(const up_tokenizer *tok, int32_t id); /* NULL if out of range */
int32_t up_tokenizer_token_id(const up_tokenizer *tok, const char *piece); /* -1 if absent */
int32_t up_tokenizer_bos_id(const up_tokenizer *tok); /* -1 if none */
int32_t up_tokenizer_eos_id(const up_tokenizer *tok); /* -1 if none */
int32_t up_tokenizer_unk_id(const up_tokenizer *tok); /* -1 if none */
/* 1 if id is an added token marked special (<bos>, <start_of_turn>, ...), else 0. */
int up_tokenizer_is_special(const up_tokenizer *tok, int32_t id);
/* 1 if id is an added token (special or not), else 0. */
int up_tokenizer_is_added(const up_tokenizer *tok, int32_t id);

#endif
