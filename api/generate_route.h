// generate_route.h — POST /v1/jobs/{id}/generate: text (or ids) from a job's
// starting model ("base") or its tuned model ("final"), for curl users and the
// dashboard's before/after panel.
//
// Body (application/json), every key optional except one of prompt / prompt_ids;
// null means "absent", unknown or repeated keys are 422 naming the key:
//   prompt          string, encoded with the job's tokenizer, BOS first
//   prompt_ids      int array, fed verbatim (the way for jobs without a tokenizer)
//   max_new_tokens  1..1024, default 64 (also capped by the model's seq_len)
//   temperature     0..5, default 0 (greedy; ids equal llama2.c run.c's)
//   top_p           0..1, default 0.9
//   seed            0..2^53, default 42 (so a repeated request repeats its text)
//   model           "base" (the weights the job started from) | "final" (default)
// 200 {"job_id","model","prompt","text","prompt_ids","ids","finish_reason"}:
// text is the completion only (null without a tokenizer), ids the generated
// ids without the BOS/EOS that stopped them, finish_reason "eos" or "length".
//
// Resources: generation runs on the request's libmicrohttpd connection thread
// (never on the scheduler's libuv loop); at most GEN_MAX_CONCURRENT run at
// once, further requests get 503 with Retry-After. Nothing is cached: each
// request reads the checkpoint (or regenerates model_init weights) and frees
// it before replying, so idle memory stays flat.
#ifndef GENERATE_ROUTE_H
#define GENERATE_ROUTE_H

#include "http.h"

#define GEN_MAX_CONCURRENT 2

// The route handler; user is the daemon's ApiContext (api.h).
void api_job_generate(HttpRequest *req, void *user);

#endif
