// strbuf.h — a growable NUL-terminated byte buffer for building replies
// (Prometheus text, CSV, SSE frames). Errors are sticky: after a failed
// allocation every append is a no-op and sb->oom stays set, so callers check
// once at the end.
#ifndef STRBUF_H
#define STRBUF_H

#include <stddef.h>

typedef struct {
    char *data; // NUL-terminated when non-NULL; owned, free with sb_free
    size_t len, cap;
    int oom;
} StrBuf;

void sb_init(StrBuf *sb);
void sb_free(StrBuf *sb);
void sb_append(StrBuf *sb, const char *s, size_t n);
void sb_puts(StrBuf *sb, const char *s);
void sb_printf(StrBuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Hands the buffer to the caller (malloc'd, caller frees) and resets sb;
// NULL after an allocation failure.
char *sb_take(StrBuf *sb, size_t *len);

// Length of the valid UTF-8 sequence at s[0..n) (1 to 4), or 0 when s[0]
// starts none: stray continuation bytes, overlong forms, surrogates, code
// points above U+10FFFF and truncated sequences are all invalid.
size_t utf8_seq_len(const unsigned char *s, size_t n);
// 1 when s[0..n) is entirely valid UTF-8.
int utf8_valid(const char *s, size_t n);
// Replaces, in place, every byte not part of a valid UTF-8 sequence by '?',
// so client-supplied text (a path, a header) can be echoed in JSON.
void utf8_scrub(char *s);

#endif
