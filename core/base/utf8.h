/* utf8 — the one UTF-8 decoder and validator (Unicode's well-formed byte sequences: no
 * overlongs, no surrogates, nothing above U+10FFFF).
 *
 * up_utf8_next(s, n, i, &cp): the sequence starting at s[i] (i < n). Returns its length 1..4 and
 *   sets *cp to its code point when it is well formed; otherwise returns -k, where k >= 1 is the
 *   length of its maximal invalid subpart, the unit that WHATWG's decoder (and so transformers.js
 *   and Python's errors="replace") turns into one U+FFFD. *cp is then unset.
 * up_utf8_valid(s, n): 1 when all n bytes are well-formed UTF-8, else 0. Embedded NULs are valid.
 * up_utf8_seq_len(s, n): the length (1..4) of the well-formed sequence at s[0], or 0 when the
 *   bytes there are not one (n == 0 included). */
#ifndef UP_UTF8_H
#define UP_UTF8_H

#include <stddef.h>
#include <stdint.h>

int up_utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp);
int up_utf8_valid(const char *s, size_t n);
int up_utf8_seq_len(const unsigned char *s, size_t n);

#endif
