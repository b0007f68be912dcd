// jobutil.h — job helpers shared by the HTTP handlers (submit) and the
// daemon's workers (run): `job:ID` references, job folders and preflight
// blockers as JSON.
#ifndef JOBUTIL_H
#define JOBUTIL_H

#include <cjson/cJSON.h>

#include "bs.h"
#include "db.h"
#include "preflight.h"

// 1 when s is "job:<id>" with a well-formed id (copied to id), else 0.
int jobref_parse(const char *s, char id[DB_ID_SIZE]);
// The model a succeeded job leaves behind: "<output_dir>/final/model.bin"
// (llama2.c), or the Hugging Face folder "<output_dir>/final" when it holds a
// config.json and no model.bin (or a newer config.json than model.bin: the
// later run wins). The model.bin path when neither exists, for messages.
// malloc'd (caller frees); NULL on OOM.
char *jobref_model_path(const char *output_dir);
// "<state_dir>/jobs/<id>", malloc'd (caller frees); NULL on OOM.
char *job_default_output_dir(const char *state_dir, const char *id);

// [{"code","field","message","hint"}, ...]; NULL on OOM.
cJSON *blockers_to_json(const Blocker *b, int n);

#endif
