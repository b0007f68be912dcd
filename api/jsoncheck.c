// jsoncheck.c — strict JSON syntax check (see jsoncheck.h).
//
// One pass, no recursion: containers are tracked on a small explicit stack
// whose size is the depth limit, so hostile nesting costs neither C stack nor
// memory. The grammar is RFC 8259's, literally.
#include "jsoncheck.h"

#include <stdio.h>

#define MAX_STACK 256

typedef struct {
    const unsigned char *s;
    size_t n, i;
    char *why;
    size_t why_len;
} Cur;

static int bad(Cur *c, const char *what) {
    if (c->why && c->why_len) snprintf(c->why, c->why_len, "%s at byte %zu", what, c->i);
    return -1;
}

static void skip_ws(Cur *c) {
    while (c->i < c->n &&
           (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

static int is_digit(unsigned char ch) {
    return ch >= '0' && ch <= '9';
}

static int hex4(Cur *c, unsigned *out) {
    if (c->n - c->i < 4) return bad(c, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char ch = c->s[c->i++];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            v |= (unsigned)(ch - 'A' + 10);
        else
            return bad(c, "bad hex digit in a \\u escape");
    }
    *out = v;
    return 0;
}

// c->s[c->i] is the opening quote.
static int string(Cur *c) {
    c->i++;
    while (c->i < c->n) {
        unsigned char ch = c->s[c->i];
        if (ch == '"') {
            c->i++;
            return 0;
        }
        if (ch < 0x20) return bad(c, "raw control character in a string");
        if (ch != '\\') {
            c->i++;
            continue;
        }
        if (++c->i >= c->n) break;
        ch = c->s[c->i++];
        if (ch == 'u') {
            unsigned u;
            if (hex4(c, &u) < 0) return -1;
            if (u >= 0xDC00 && u <= 0xDFFF) return bad(c, "unpaired low surrogate escape");
            if (u >= 0xD800 && u <= 0xDBFF) {
                unsigned lo;
                if (c->n - c->i < 6 || c->s[c->i] != '\\' || c->s[c->i + 1] != 'u')
                    return bad(c, "unpaired high surrogate escape");
                c->i += 2;
                if (hex4(c, &lo) < 0) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return bad(c, "unpaired high surrogate escape");
            }
        } else if (ch != '"' && ch != '\\' && ch != '/' && ch != 'b' && ch != 'f' && ch != 'n' &&
                   ch != 'r' && ch != 't') {
            c->i--;
            return bad(c, "invalid escape in a string");
        }
    }
    return bad(c, "unterminated string");
}

static int number(Cur *c) {
    if (c->s[c->i] == '-') c->i++;
    if (c->i >= c->n) return bad(c, "truncated number");
    if (c->s[c->i] == '0') {
        c->i++;
        if (c->i < c->n && is_digit(c->s[c->i])) return bad(c, "leading zero in a number");
    } else if (is_digit(c->s[c->i])) {
        while (c->i < c->n && is_digit(c->s[c->i]))
            c->i++;
    } else {
        return bad(c, "invalid number");
    }
    if (c->i < c->n && c->s[c->i] == '.') {
        c->i++;
        if (c->i >= c->n || !is_digit(c->s[c->i])) return bad(c, "digit expected after '.'");
        while (c->i < c->n && is_digit(c->s[c->i]))
            c->i++;
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-')) c->i++;
        if (c->i >= c->n || !is_digit(c->s[c->i])) return bad(c, "digit expected in exponent");
        while (c->i < c->n && is_digit(c->s[c->i]))
            c->i++;
    }
    return 0;
}

static int literal(Cur *c, const char *word) {
    size_t k = 0;
    while (word[k]) {
        if (c->i + k >= c->n || c->s[c->i + k] != (unsigned char)word[k])
            return bad(c, "invalid literal");
        k++;
    }
    c->i += k;
    return 0;
}

int json_check(const char *s, size_t n, int max_depth, int *top_is_object, char *why,
               size_t why_len) {
    Cur c = {(const unsigned char *)s, n, 0, why, why_len};
    char stack[MAX_STACK]; // '{' or '['
    int depth = 0;
    if (max_depth > MAX_STACK) max_depth = MAX_STACK;
    if (top_is_object) *top_is_object = 0;
    skip_ws(&c);
    if (c.i < c.n && c.s[c.i] == '{' && top_is_object) *top_is_object = 1;
    // Each turn parses one value; after it, commas and closers are consumed
    // until the next value is due or the document ends.
    for (;;) {
        skip_ws(&c);
        if (c.i >= c.n) return bad(&c, "value expected");
        unsigned char ch = c.s[c.i];
        int opened = 0;
        if (ch == '{' || ch == '[') {
            if (depth == max_depth) return bad(&c, "nesting too deep");
            stack[depth++] = (char)ch;
            c.i++;
            skip_ws(&c);
            if (c.i < c.n && c.s[c.i] == (ch == '{' ? '}' : ']')) {
                depth--;
                c.i++;
            } else {
                opened = 1;
            }
        } else if (ch == '"') {
            if (string(&c) < 0) return -1;
        } else if (ch == '-' || is_digit(ch)) {
            if (number(&c) < 0) return -1;
        } else if (ch == 't') {
            if (literal(&c, "true") < 0) return -1;
        } else if (ch == 'f') {
            if (literal(&c, "false") < 0) return -1;
        } else if (ch == 'n') {
            if (literal(&c, "null") < 0) return -1;
        } else {
            return bad(&c, "unexpected character");
        }
        if (opened && stack[depth - 1] == '{') goto key;
        if (opened) continue;
        // After a complete value.
        for (;;) {
            skip_ws(&c);
            if (depth == 0) {
                if (c.i != c.n) return bad(&c, "trailing characters after the value");
                return 0;
            }
            if (c.i >= c.n) return bad(&c, "unterminated array or object");
            ch = c.s[c.i];
            char top = stack[depth - 1];
            if (ch == ',') {
                c.i++;
                if (top == '{') goto key;
                break; // next array element
            }
            if (ch == (top == '{' ? '}' : ']')) {
                c.i++;
                depth--;
                continue;
            }
            return bad(&c, top == '{' ? "',' or '}' expected" : "',' or ']' expected");
        }
        continue;
    key:
        skip_ws(&c);
        if (c.i >= c.n || c.s[c.i] != '"') return bad(&c, "string key expected");
        if (string(&c) < 0) return -1;
        skip_ws(&c);
        if (c.i >= c.n || c.s[c.i] != ':') return bad(&c, "':' expected");
        c.i++;
    }
}
