#include "engine/batch.h"

#include <string.h>

int up_batch_left_pad(const int32_t *const *seqs, const int *lens, const int *rows, int n_rows, int32_t pad_id,
                      int32_t *tokens, int *n_pad) {
    int T = 0;
    for (int r = 0; r < n_rows; r++) {
        const int i = rows ? rows[r] : r;
        if (lens[i] > T) T = lens[i];
    }
    for (int r = 0; r < n_rows; r++) {
        const int i = rows ? rows[r] : r;
        int32_t *row = tokens + (size_t)r * T;
        n_pad[r] = T - lens[i];
        for (int t = 0; t < n_pad[r]; t++) row[t] = pad_id;
        if (lens[i] > 0) memcpy(row + n_pad[r], seqs[i], (size_t)lens[i] * sizeof *row);
    }
    return T;
}
