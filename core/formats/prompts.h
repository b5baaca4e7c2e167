/* prompts — lists of instructions read from the files researchers already have.
 *
 * Formats (chosen by content, not by extension):
 *   - JSON: a list of strings, or a list of objects with an "instruction" field (Arditi et
 *     al.'s splits; other fields such as "category" are ignored), or with a "goal" / "prompt"
 *     field;
 *   - JSON Lines (the file opens with '{'): one such object per non-blank line;
 *   - CSV with a header row naming a `goal` column (AdvBench), RFC 4180 quoting; a file
 *     named *.csv is always CSV, so one without that column is an error, not lines;
 *   - otherwise plain text, one prompt per non-empty line (trailing CR stripped).
 * A leading UTF-8 byte order mark is skipped; text that is not UTF-8 is an error naming the line.
 * The list owns its strings; up_prompts_free releases them. Errors name the file and the
 * line or element. */
#ifndef UP_PROMPTS_H
#define UP_PROMPTS_H

#include "base/error.h"

typedef struct up_prompts {
    char **items; /* (n) */
    int n;
} up_prompts;

up_status up_prompts_load(up_prompts *out, const char *path, up_error *err);
void up_prompts_free(up_prompts *p);

#endif
