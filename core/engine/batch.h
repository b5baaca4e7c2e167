/* batch — lays token sequences out as one left-padded chunk for up_forward (forward.h).
 *
 * up_batch_left_pad(seqs, lens, rows, n_rows, pad_id, tokens, n_pad): row r of tokens
 * (n_rows, T) holds sequence i = rows[r] (i = r when rows is NULL) right-aligned: n_pad[r] =
 * T - lens[i] leading slots of pad_id, then the lens[i] ids of seqs[i]. T, the longest of the
 * chosen lengths, is returned. Passed to up_forward as (tokens, n_pad, n_rows, T), the pad slots
 * get position -1 and are never attended to, and each row's real tokens take positions 0, 1, ...,
 * so a row computes what it would alone (forward.h): n_pad is the whole position and mask
 * description.
 *
 * Ownership: every buffer is the caller's; tokens must hold n_rows * T ids (n_rows times the
 * longest length of all the sequences always suffices) and n_pad n_rows ints. Nothing is
 * checked or allocated: callers reject the lengths they do not accept (a length of 0 gives an
 * all-pad row, which up_forward does not accept). */
#ifndef UP_BATCH_H
#define UP_BATCH_H

#include <stdint.h>

int up_batch_left_pad(const int32_t *const *seqs, const int *lens, const int *rows, int n_rows, int32_t pad_id,
                      int32_t *tokens, int *n_pad);

#endif
