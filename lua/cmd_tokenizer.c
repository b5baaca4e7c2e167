/* Placeholder until the tokenizer lands (replaced by the tokenizer work). */
#include <stdio.h>
#include "cli.h"
int up_cmd_tokenize(int argc, char **argv) { fprintf(stderr, "upstream tokenize: not built yet\n"); return 1; }
int up_cmd_detokenize(int argc, char **argv) { fprintf(stderr, "upstream detokenize: not built yet\n"); return 1; }
