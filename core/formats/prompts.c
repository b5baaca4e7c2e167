#include "formats/prompts.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/utf8.h"

static up_status push(up_prompts *p, const char *s, size_t len, up_error *err) {
    if (p->n % 64 == 0) {
        char **grown = realloc(p->items, (size_t)(p->n + 64) * sizeof *grown);
        if (!grown) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
        p->items = grown;
    }
    char *copy = malloc(len + 1);
    if (!copy) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    memcpy(copy, s, len);
    copy[len] = '\0';
    p->items[p->n++] = copy;
    return UP_OK;
}

/* One element of a JSON list or one JSON Lines record: a string, or an object's "instruction"
 * ("goal", "prompt") string; other fields (a category, a source) are ignored. */
static up_status push_json(up_prompts *p, json_t *e, const char *path, const char *what, size_t i, up_error *err) {
    json_t *s = e;
    if (json_is_object(e)) {
        s = json_object_get(e, "instruction");
        if (!s) s = json_object_get(e, "goal");
        if (!s) s = json_object_get(e, "prompt");
    }
    if (!json_is_string(s))
        return up_error_set(err, UP_ERR_FORMAT,
                            "%s: %s %zu is neither a string nor an object with an \"instruction\" string", path, what, i);
    return push(p, json_string_value(s), json_string_length(s), err);
}

static up_status load_json(up_prompts *p, const char *path, const char *text, size_t len, up_error *err) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root) return up_error_set(err, UP_ERR_FORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
    up_status st = UP_OK;
    size_t i;
    json_t *e;
    json_array_foreach(root, i, e) {
        if ((st = push_json(p, e, path, "element", i, err))) break;
    }
    json_decref(root);
    return st;
}

/* JSON Lines: one record per non-blank line. A file that opens with '{' but is one object
 * over several lines (a dict of sets, say) fails on its first line, naming both formats. */
static up_status load_json_lines(up_prompts *p, const char *path, const char *text, size_t len, up_error *err) {
    size_t start = 0;
    int line = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != '\n') continue;
        line++;
        size_t first = start;
        while (first < i && strchr(" \t\r", text[first])) first++;
        if (first < i) {
            json_error_t jerr;
            json_t *e = json_loadb(text + first, i - first, 0, &jerr);
            if (!e)
                return up_error_set(err, UP_ERR_FORMAT,
                                    "%s:%d: %s (expected a JSON list of prompts, or one JSON record per line)", path,
                                    line, jerr.text);
            up_status st = push_json(p, e, path, "line", (size_t)line, err);
            json_decref(e);
            if (st) return st;
        }
        start = i + 1;
    }
    return UP_OK;
}

/* One RFC 4180 field starting at *pos; returns a malloc'd copy and advances past the separator. */
static char *csv_field(const char *text, size_t len, size_t *pos, int *end_of_row, int *bad) {
    size_t i = *pos, cap = 64, n = 0;
    char *out = malloc(cap);
    if (i < len && text[i] == '"') {
        i++;
        for (;;) {
            if (i >= len) {
                *bad = 1;
                break;
            }
            if (text[i] == '"') {
                if (i + 1 < len && text[i + 1] == '"') i++;
                else {
                    i++;
                    break;
                }
            }
            if (n + 1 >= cap) out = realloc(out, cap *= 2);
            out[n++] = text[i++];
        }
    } else {
        while (i < len && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
            if (n + 1 >= cap) out = realloc(out, cap *= 2);
            out[n++] = text[i++];
        }
    }
    out[n] = '\0';
    *end_of_row = 1;
    if (i < len && text[i] == ',') {
        i++;
        *end_of_row = 0;
    } else {
        if (i < len && text[i] == '\r') i++;
        if (i < len && text[i] == '\n') i++;
    }
    *pos = i;
    return out;
}

static up_status load_csv(up_prompts *p, const char *path, const char *text, size_t len, up_error *err) {
    size_t pos = 0;
    int col = 0, goal = -1, end = 0, bad = 0, line = 1;
    while (!end) {
        char *f = csv_field(text, len, &pos, &end, &bad);
        if (!strcmp(f, "goal")) goal = col;
        free(f);
        col++;
    }
    if (goal < 0) return up_error_set(err, UP_ERR_FORMAT, "%s: CSV header has no `goal` column", path);
    while (pos < len && !bad) {
        line++;
        col = 0;
        end = 0;
        int found = 0;
        while (!end) {
            char *f = csv_field(text, len, &pos, &end, &bad);
            if (col == goal && *f) {
                up_status st = push(p, f, strlen(f), err);
                found = 1;
                if (st) {
                    free(f);
                    return st;
                }
            }
            free(f);
            col++;
        }
        (void)found;
    }
    if (bad) return up_error_set(err, UP_ERR_FORMAT, "%s: row %d: unterminated quoted field", path, line);
    return UP_OK;
}

static up_status load_lines(up_prompts *p, const char *text, size_t len, up_error *err) {
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == '\n') {
            size_t end = i;
            if (end > start && text[end - 1] == '\r') end--;
            int blank = 1;
            for (size_t j = start; j < end; j++)
                if (text[j] != ' ' && text[j] != '\t') blank = 0;
            if (!blank) {
                up_status st = push(p, text + start, end - start, err);
                if (st) return st;
            }
            start = i + 1;
        }
    }
    return UP_OK;
}

/* A file named *.csv is read as CSV even when its header lacks `goal`: then it fails, rather
 * than turning its header and rows into prompts. */
static int is_csv_name(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && !strcasecmp(path + n - 4, ".csv");
}

/* The first line names a `goal` column: "goal,...", "...,goal,..." or "goal" alone. */
static int has_goal_header(const char *text, size_t header_len) {
    return memmem(text, header_len, "goal,", 5) || memmem(text, header_len, ",goal", 5) ||
           (header_len >= 4 && !memcmp(text, "goal", 4) && (header_len == 4 || text[4] == '\r'));
}

up_status up_prompts_load(up_prompts *out, const char *path, up_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return up_error_set(err, UP_ERR_IO, "cannot open prompt file %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(text);
        return up_error_set(err, UP_ERR_IO, "cannot read prompt file %s", path);
    }
    fclose(f);
    text[size] = '\0';
    /* A UTF-8 byte order mark (spreadsheet exports write one) is not part of the first prompt. */
    const char *body = text;
    if (size >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) body += 3, size -= 3;
    /* Text that is not UTF-8 (a Latin-1 or Windows-1252 export) would reach the tokenizer as
     * stray bytes and give other prompts than the file shows: refused, naming the line. */
    for (size_t at = 0, line = 1; at < (size_t)size; line++) {
        const char *end = memchr(body + at, '\n', (size_t)size - at);
        size_t len = end ? (size_t)(end - body) - at : (size_t)size - at;
        if (!up_utf8_valid(body + at, len)) {
            free(text);
            return up_error_set(err, UP_ERR_FORMAT, "%s:%zu: not UTF-8 text (save the file as UTF-8)", path,
                                line);
        }
        at += len + 1;
    }
    size_t first = 0;
    while (first < (size_t)size && strchr(" \t\r\n", body[first])) first++;
    const char *nl = memchr(body, '\n', (size_t)size);
    size_t header_len = nl ? (size_t)(nl - body) : (size_t)size;
    up_status st;
    if (first < (size_t)size && body[first] == '[') st = load_json(out, path, body, (size_t)size, err);
    else if (first < (size_t)size && body[first] == '{') st = load_json_lines(out, path, body, (size_t)size, err);
    else if (is_csv_name(path) || has_goal_header(body, header_len)) st = load_csv(out, path, body, (size_t)size, err);
    else st = load_lines(out, body, (size_t)size, err);
    free(text);
    if (!st && out->n == 0) st = up_error_set(err, UP_ERR_FORMAT, "%s: no prompts found", path);
    if (st) up_prompts_free(out);
    return st;
}

void up_prompts_free(up_prompts *p) {
    for (int i = 0; i < p->n; i++) free(p->items[i]);
    free(p->items);
    p->items = NULL;
    p->n = 0;
}
