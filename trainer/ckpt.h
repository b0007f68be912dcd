// ckpt.h — llama2.c "v0" checkpoints: read (size-validated) and write
// (temporary name, fsync, rename), so a tuned model runs in llama2.c's run.c.
#ifndef CKPT_H
#define CKPT_H

#include "bs.h"
#include "model.h"

// Reads only the 28-byte header and checks the file size against it.
// A negative vocab_size in the file means a separate classifier.
int ckpt_peek_llama2c(const char *path, ModelConfig *cfg, BsError *err);
// Reads a whole checkpoint: *params is malloc'd (model_param_count floats)
// and owned by the caller. The freq_cis tables in the file are skipped.
int ckpt_read_llama2c(const char *path, ModelConfig *cfg, float **params, BsError *err);
// Writes cfg + params in v0 layout (freq_cis tables included, as run.c
// expects them) to path.tmp, fsyncs, renames over path, fsyncs the folder.
int ckpt_write_llama2c(const char *path, const ModelConfig *cfg, const float *params, BsError *err);

// Durable whole-file write helper shared by every writer of the library:
// writes len bytes to path.tmp, fsyncs, renames, fsyncs the directory.
int ckpt_write_file_atomic(const char *path, const void *data, size_t len, BsError *err);

#endif
