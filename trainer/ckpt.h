// ckpt.h — llama2.c "v0" checkpoints: read (size-validated) and write
// (temporary name, fsync, rename), so a tuned model runs in llama2.c's run.c.
#ifndef CKPT_H
#define CKPT_H

#include <sys/uio.h>

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
// The same durable write for a file made of n_iov chunks written in order
// (large writers point the chunks at existing buffers instead of copying).
int ckpt_write_iov_atomic(const char *path, const struct iovec *iov, int n_iov, BsError *err);

// Any model the library reads: a llama2.c .bin file, or a Hugging Face model
// directory (config.json + model.safetensors or a sharded
// model.safetensors.index.json; Llama/Mistral, see hf.h). A directory is read
// as Hugging Face, anything else as llama2.c. Both are implemented in hf.c.
// Errors: model_not_found, model_invalid (param: the file or tensor),
// model_unsupported (param: the config.json field or tensor name), io.
// Header-only check (config, every tensor's name, dtype, shape and offsets);
// no tensor data is read.
int ckpt_peek_model(const char *path, ModelConfig *cfg, BsError *err);
// Reads the whole model: *params is malloc'd (model_param_count floats, flat
// llama2.c order with adjacent-pair RoPE rows) and owned by the caller.
int ckpt_read_model(const char *path, ModelConfig *cfg, float **params, BsError *err);

#endif
