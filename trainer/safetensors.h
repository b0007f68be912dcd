// safetensors.h — the safetensors tensor file format (Hugging Face): a
// strictly validated, mmap-backed reader (single files and sharded model
// directories) that widens F32/F16/BF16 to f32, and a durable writer of F32 or
// BF16 files.
//
// File layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
// {"name": {"dtype": "F32", "shape": [r, c], "data_offsets": [begin, end]},
//  ..., "__metadata__": {string: string}}, then the data buffer; offsets are
// relative to the buffer. The reader enforces what the format specifies and
// the reference implementation checks: N <= 100,000,000 and 8 + N <= file
// size, the header starts with '{' and is one JSON object (trailing spaces
// allowed), every entry has a known dtype, a shape of non-negative integers
// and begin <= end with end - begin == numel * dtype size, and the entries
// tile the buffer exactly: no overlap, no hole, nothing after the last one.
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "bs.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_BYTES 100000000ull

typedef enum {
    ST_BOOL,
    ST_U8,
    ST_I8,
    ST_F8_E5M2,
    ST_F8_E4M3,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_F64,
    ST_I64,
    ST_U64,
} StDtype;

typedef struct {
    const char *name; // owned by the SafeTensors set
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const unsigned char *data; // inside the read-only mapping, unaligned
    const char *file;          // path of the file holding it
} StTensor;

typedef struct SafeTensors SafeTensors;

// Opens one .safetensors file: maps it read-only and validates its header.
// *out is owned by the caller (st_close). Errors: model_not_found (missing
// file), model_invalid (param: the file or the tensor at fault), io.
int st_open(SafeTensors **out, const char *path, BsError *err);
// Opens the weights of a Hugging Face model directory the way transformers
// looks for them: dir/model.safetensors, else dir/model.safetensors.index.json
// whose "weight_map" names the shard of every tensor (plain file names in
// dir). Every shard is validated, every weight_map entry must be in its shard
// and no tensor may appear twice.
int st_open_dir(SafeTensors **out, const char *dir, BsError *err);
void st_close(SafeTensors *st);

int st_count(const SafeTensors *st);
// Tensors sorted by name; i in [0, st_count).
const StTensor *st_tensor(const SafeTensors *st, int i);
// NULL when absent.
const StTensor *st_find(const SafeTensors *st, const char *name);

const char *st_dtype_name(StDtype d);
// 1 for F32, F16 and BF16 (what st_read_f32 widens), else 0.
int st_dtype_is_float(StDtype d);
// Widens n elements starting at element first of t into dst (n floats).
// F16 and BF16 are exact in f32. Returns -1 (model_invalid, param = the
// tensor) for another dtype or a range outside the tensor.
int st_read_f32(const StTensor *t, size_t first, size_t n, float *dst, BsError *err);

// IEEE half / bfloat16 bits <-> f32. Rounding is to nearest even, as torch's
// .to(torch.bfloat16) does; NaN becomes the quiet NaN 0x7FC0.
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
uint16_t st_f32_to_bf16(float f);

// Reads a whole small side file (index or config JSON, at most max bytes)
// into a malloc'd NUL-terminated buffer the caller frees; *len excludes the
// NUL. Errors: model_not_found (missing), model_invalid (too large), io.
int st_slurp(const char *path, size_t max, char **out, size_t *len, BsError *err);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data; // numel floats, row-major
} StWriteTensor;

// Writes the tensors as dtype ST_F32 or ST_BF16 to path (temporary name,
// fsync, rename, fsync of the folder: see ckpt_write_iov_atomic). Header and
// data are in name order (deterministic bytes for the same input), the header
// is padded with spaces so the data starts 8-byte aligned and carries
// "__metadata__": {"format": "pt"}. Names must be distinct.
int st_write(const char *path, const StWriteTensor *tensors, int n, StDtype dtype, BsError *err);

#endif
