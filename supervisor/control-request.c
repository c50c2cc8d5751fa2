/*
 * control-request.c: checking a control request's envelope (see
 * control-request.h). Only the envelope: the command layer checks `args`
 * (command-args.c). Every problem is answered with the code the protocol
 * documents, so a client learns which field to fix.
 */
#include "supervisor/control-request.h"

#include <stdarg.h>

#include "supervisor/control.h"

static gboolean fail(NfControlRequest *req, const char *code, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static gboolean fail(NfControlRequest *req, const char *code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  req->code = code;
  req->message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  return FALSE;
}

gboolean nf_control_request_parse(const char *line, gsize len, NfControlRequest *req)
{
  *req = (NfControlRequest){0};
  if (len > 0 && line[len - 1] == '\r')
    len--;
  if (len == 0)
    return FALSE; /* blank lines are keep-alives */
  json_error_t jerr;
  req->doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!req->doc)
    return fail(req, "bad_request", "not JSON: %s", jerr.text);
  if (!json_is_object(req->doc))
    return fail(req, "bad_request", "a request is a JSON object");
  json_t *id = json_object_get(req->doc, "id");
  if (id && !json_is_string(id) && !json_is_integer(id) && !json_is_null(id))
    return fail(req, "bad_request", "\"id\" must be a string or an integer");
  req->id = id;
  json_t *v = json_object_get(req->doc, "v");
  if (!json_is_integer(v))
    return fail(req, "bad_request", "missing \"v\": this server speaks protocol version %d",
                NF_CONTROL_PROTOCOL);
  if (json_integer_value(v) != NF_CONTROL_PROTOCOL)
    return fail(req, "unsupported_version",
                "protocol version %" JSON_INTEGER_FORMAT " not supported (this is %d)",
                json_integer_value(v), NF_CONTROL_PROTOCOL);
  json_t *cmd = json_object_get(req->doc, "cmd");
  if (!json_is_string(cmd))
    return fail(req, "bad_request", "\"cmd\" must be a string");
  json_t *args = json_object_get(req->doc, "args");
  if (args && !json_is_null(args) && !json_is_object(args))
    return fail(req, "bad_args", "\"args\" must be an object");
  req->cmd = json_string_value(cmd);
  req->args = args && !json_is_null(args) ? args : (req->empty = json_object());
  return TRUE;
}

void nf_control_request_clear(NfControlRequest *req)
{
  json_decref(req->doc);
  json_decref(req->empty);
  g_free(req->message);
  *req = (NfControlRequest){0};
}
