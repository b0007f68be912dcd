// state.h — the training-state checkpoint ("BSLMSTAT"): everything train_run
// needs to continue a run exactly where it stopped (model config, position in
// the data, RNG, optimizer step, AdamW moments, the trainer's own extra bytes)
// in one file written durably (tmp, fsync, rename) and verified by CRC32.
//
// Layout, little-endian, no padding:
//   "BSLMSTAT" | u32 version | u32 header_len | header (header_len bytes)
//   | u64 extra_len | extra | u64 n_params | params f32[P] | m f32[P] | v f32[P]
//   | u32 crc32 (zlib) of every byte before it
// The header fields are listed in state.c (state_header_write); readers refuse
// a header_len they do not know, so the version must change with the header.
#ifndef STATE_H
#define STATE_H

#include <stddef.h>
#include <stdint.h>

#include "bs.h"
#include "model.h"

#define STATE_MAGIC "BSLMSTAT"
#define STATE_VERSION 1u

typedef struct {
    ModelConfig cfg;
    int32_t method;         // Method of the run
    int32_t step;           // optimizer steps done
    int32_t total_steps;    // planned optimizer steps
    int32_t epoch;          // 0-based epoch the next step belongs to
    int32_t batch_in_epoch; // index of the next micro-batch within that epoch
    uint64_t rng_state;     // data-order RNG state that produced this epoch's order
    uint64_t recipe_hash;   // identity of the recipe (paths and output knobs excluded)
    uint64_t data_hash;     // identity of the tokenized train + eval rows
    uint32_t ref_crc;       // CRC32 of the DPO reference weights, 0 when none
    uint8_t *extra;         // (extra_len) trainer-defined bytes; see train.c
    size_t extra_len;
    size_t n_params;       // P == model_param_count(&cfg)
    float *params, *m, *v; // (P) each
    int owned;             // 1: extra/params/m/v were allocated by state_read
} TrainState;

// Writes s to path durably: path.tmp is streamed (no full-file buffer), fsynced,
// renamed over path and the folder fsynced. n_params must equal
// model_param_count(&s->cfg). Errors: "io" (ENOSPC included), "invalid_argument".
int state_write(const char *path, const TrainState *s, BsError *err);

// Reads and validates a state file (magic, version, sizes against the file
// size, config, CRC). On success s owns malloc'd extra/params/m/v: free with
// state_free. On failure nothing is allocated and err->code is "io" (cannot
// open/read) or "corrupt_state" (anything malformed, truncated or mismatched).
int state_read(const char *path, TrainState *s, BsError *err);
void state_free(TrainState *s);

#endif
