// fuzz_common.h — helpers shared by the libFuzzer targets: an in-memory file
// (memfd) that the parsers open by path like a real file, and FUZZ_CHECK, the
// property assertion that aborts the harness (never the library) so libFuzzer
// keeps the input as a crash.
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <errno.h>
#include <ftw.h>
#include <limits.h>
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

// Prints to stderr when FUZZ_DEBUG is set (what a seed did, while writing
// seeds); silent otherwise, as libFuzzer runs want.
#define FUZZ_DEBUG(...)                                                                            \
    do {                                                                                           \
        static int on_ = -1;                                                                       \
        if (on_ < 0) on_ = getenv("FUZZ_DEBUG") != NULL;                                           \
        if (on_) {                                                                                 \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
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

static char fuzz_tmp_root[PATH_MAX];

static inline int fuzz_rm_entry(const char *path, const struct stat *sb, int flag,
                                struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static inline void fuzz_tmp_cleanup(void) {
    if (fuzz_tmp_root[0]) nftw(fuzz_tmp_root, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// Makes (once per process) a private folder for files the target writes,
// on tmpfs when there is one (accepted inputs fsync), removed at exit.
// Returns its path.
static inline const char *fuzz_tmp_dir(const char *name) {
    if (fuzz_tmp_root[0]) return fuzz_tmp_root;
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!tmp) tmp = "/tmp";
    snprintf(fuzz_tmp_root, sizeof fuzz_tmp_root, "%s/%s_XXXXXX", tmp, name);
    FUZZ_CHECK(mkdtemp(fuzz_tmp_root) != NULL, "mkdtemp %s: errno %d", fuzz_tmp_root, errno);
    atexit(fuzz_tmp_cleanup);
    return fuzz_tmp_root;
}

// 1 when s[0..n) is UTF-8 as RFC 3629 defines it (no overlongs, no
// surrogates, nothing above U+10FFFF). Written here, apart from the library's
// own checks, so the two can disagree.
static inline int fuzz_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

#endif
