#include "base/utf8.h"

int up_utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned b = s[i];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range narrows for E0, ED, F0, F4 */
    uint32_t c;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0; /* overlong */
        if (b == 0xED) hi = 0x9F; /* surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xF0) lo = 0x90; /* overlong */
        if (b == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if (i + (size_t)k >= n) return -k;
        unsigned x = s[i + (size_t)k];
        if (x < lo || x > hi) return -k;
        lo = 0x80;
        hi = 0xBF;
        c = (c << 6) | (x & 0x3F);
    }
    *cp = c;
    return need + 1;
}

int up_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int k = up_utf8_next(u, n, i, &cp);
        if (k < 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

int up_utf8_seq_len(const unsigned char *s, size_t n) {
    uint32_t cp;
    if (n == 0) return 0;
    int k = up_utf8_next(s, n, 0, &cp);
    return k > 0 ? k : 0;
}
