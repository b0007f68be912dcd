// fuzz_common.h — helpers shared by the libFuzzer targets: an in-memory file
// (memfd) that the parsers open by path like a real file, and FUZZ_CHECK, the
// property assertion that aborts the harness (never the library) so libFuzzer
// keeps the input as a crash.
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    int fd;
    char path[64];
} FuzzFile;

// Creates (once per process) the memfd behind f. The parsers reopen it through
// /proc/self/fd/N, which gives a fresh offset and a regular file, as on disk.
static inline void fuzz_file_init(FuzzFile *f, const char *name) {
    f->fd = memfd_create(name, MFD_CLOEXEC);
    FUZZ_CHECK(f->fd >= 0, "memfd_create: errno %d", errno);
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

// Replaces the file's contents with data[0..size).
static inline void fuzz_file_set(FuzzFile *f, const uint8_t *data, size_t size) {
    FUZZ_CHECK(ftruncate(f->fd, 0) == 0, "ftruncate: errno %d", errno);
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(f->fd, data + off, size - off, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        FUZZ_CHECK(w > 0, "pwrite: errno %d", errno);
        off += (size_t)w;
    }
}

#endif
