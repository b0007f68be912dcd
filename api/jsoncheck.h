// jsoncheck.h — a strict RFC 8259 syntax check for request bodies, run before
// cJSON (which is lenient: it takes leading zeros, raw control characters in
// strings, lone surrogate escapes and trailing bytes), so every body the API
// accepts as JSON is JSON, and the 400 / 422 split stays "syntax / meaning".
#ifndef JSONCHECK_H
#define JSONCHECK_H

#include <stddef.h>

// Checks that s[0..n) is exactly one JSON value (surrounded by optional
// white space) nested at most max_depth arrays/objects deep, with valid
// escapes (surrogate escapes paired) and no raw control characters in
// strings. UTF-8 validity is checked separately (utf8_valid). Returns 0, or
// -1 with a one-line reason naming the byte offset in why. *top_is_object
// (may be NULL) is set to 1 when the value is an object.
int json_check(const char *s, size_t n, int max_depth, int *top_is_object, char *why,
               size_t why_len);

#endif
