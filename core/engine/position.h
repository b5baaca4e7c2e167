/* position — how upstream names a token position inside a prompt of n tokens.
 *
 * A position p >= 0 counts from the prompt's first token; p < 0 counts from its end, so -1 is
 * the last prompt token (design: the post's "last token" convention, docs/method.md). Every
 * option that takes positions (steering, scoring, objectives, gradients) resolves them here.
 *
 * up_position_resolve(p, n): the 0-based index p names, p + n when p < 0. The result may lie
 * outside [0, n); callers that require it inside check it (and say which position failed). */
#ifndef UP_POSITION_H
#define UP_POSITION_H

static inline int up_position_resolve(int p, int n) { return p < 0 ? n + p : p; }

#endif
