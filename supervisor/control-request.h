/*
 * control-request.h: the envelope of one control-protocol request line
 * ({"v":1,"id":..,"cmd":"..","args":{..}}, control-protocol.md), checked
 * apart from any socket so that the control transport and the fuzzer
 * (tests/fuzz/fuzz-control.c) run the very same code on outside bytes.
 */
#pragma once
#include <glib.h>
#include <jansson.h>

typedef struct {
  json_t *doc;      /* the whole request (owned) */
  json_t *id;       /* borrowed from doc, or NULL: echo it in the answer */
  const char *cmd;  /* borrowed from doc */
  json_t *args;     /* borrowed from doc, or `empty` */
  json_t *empty;    /* owned: the args of a request that had none */
  const char *code; /* on failure: the protocol's error code ("bad_request"...) */
  char *message;    /* on failure: what was wrong (owned) */
} NfControlRequest;

/* Parses line `line` (`len` bytes, without its '\n'; a trailing '\r' is
 * dropped). Returns TRUE with req->doc/id/cmd/args set when the envelope
 * is well formed: `args` is then always an object (an empty one when the
 * request had none or null). Returns FALSE with req->code and req->message
 * set otherwise (req->id set when the request had a usable one). A blank
 * line returns FALSE with req->code NULL: a keep-alive, not answered.
 * Free with nf_control_request_clear() either way. */
gboolean nf_control_request_parse(const char *line, gsize len, NfControlRequest *req);

/* Releases what nf_control_request_parse() set; `req` may then be reused. */
void nf_control_request_clear(NfControlRequest *req);
