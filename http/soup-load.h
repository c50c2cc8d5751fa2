/*
 * soup-load.h: libsoup, loaded when the HTTP door first opens, not when the
 * binary starts. Linked in, libsoup and the twenty libraries it pulls in
 * (sqlite, krb5, brotli, nghttp2, ...) cost every `nervesfleet` call their
 * loading and relocation, ~7 ms on a small VM, and only `run --http` uses
 * them. So the binary is linked without libsoup; nf_soup_load() opens
 * libsoup-3.0.so.0 and fills a table with the functions http/ calls, and
 * the defines at the end of this file send every such call through it.
 *
 * http/ code includes this header (through http-private.h) and calls
 * libsoup as usual. A libsoup function not in NF_SOUP_FUNCTIONS fails the
 * binary's link (libsoup is not on its link line): add it to both lists.
 * Types come from the real headers (__typeof__), so calls are checked as
 * before. Compile-time macros that reach libsoup's exported data (e.g.
 * SOUP_METHOD_POST) are not used; compare method names as strings.
 */
#pragma once
#include <libsoup/soup.h>

/* The soname this binary was compiled against (libsoup 3). */
#define NF_SOUP_SONAME "libsoup-3.0.so.0"

#define NF_SOUP_FUNCTIONS(X)                                                                       \
  X(soup_message_body_append)                                                                      \
  X(soup_message_body_complete)                                                                    \
  X(soup_message_body_flatten)                                                                     \
  X(soup_message_body_set_accumulate)                                                              \
  X(soup_message_headers_foreach)                                                                  \
  X(soup_message_headers_get_content_length)                                                       \
  X(soup_message_headers_get_encoding)                                                             \
  X(soup_message_headers_get_one)                                                                  \
  X(soup_message_headers_replace)                                                                  \
  X(soup_message_headers_set_content_type)                                                         \
  X(soup_message_headers_set_encoding)                                                             \
  X(soup_server_accept_iostream)                                                                   \
  X(soup_server_add_early_handler)                                                                 \
  X(soup_server_add_handler)                                                                       \
  X(soup_server_disconnect)                                                                        \
  X(soup_server_get_type)                                                                          \
  X(soup_server_message_get_method)                                                                \
  X(soup_server_message_get_remote_address)                                                        \
  X(soup_server_message_get_request_body)                                                          \
  X(soup_server_message_get_request_headers)                                                       \
  X(soup_server_message_get_response_body)                                                         \
  X(soup_server_message_get_response_headers)                                                      \
  X(soup_server_message_get_status)                                                                \
  X(soup_server_message_get_uri)                                                                   \
  X(soup_server_message_pause)                                                                     \
  X(soup_server_message_set_response)                                                              \
  X(soup_server_message_set_status)                                                                \
  X(soup_server_message_steal_connection)                                                          \
  X(soup_server_message_unpause)                                                                   \
  X(soup_status_get_phrase)

#define NF_SOUP_FIELD(name) __typeof__(name) *name;
typedef struct {
  NF_SOUP_FUNCTIONS(NF_SOUP_FIELD)
} NfSoupFunctions;
#undef NF_SOUP_FIELD

/* Filled by nf_soup_load(); read only through the defines below. */
extern NfSoupFunctions nf_soup;

/* Opens libsoup and resolves every function above, once per process (later
 * calls return TRUE at once). FALSE with an error naming the library, what
 * failed and the package to install. Not thread-safe: the main loop's
 * thread only. The library stays loaded: its GTypes cannot be unloaded. */
gboolean nf_soup_load(GError **error);

#ifndef NF_SOUP_LOADER /* soup-load.c names the functions themselves */
#define soup_message_body_append (nf_soup.soup_message_body_append)
#define soup_message_body_complete (nf_soup.soup_message_body_complete)
#define soup_message_body_flatten (nf_soup.soup_message_body_flatten)
#define soup_message_body_set_accumulate (nf_soup.soup_message_body_set_accumulate)
#define soup_message_headers_foreach (nf_soup.soup_message_headers_foreach)
#define soup_message_headers_get_content_length (nf_soup.soup_message_headers_get_content_length)
#define soup_message_headers_get_encoding (nf_soup.soup_message_headers_get_encoding)
#define soup_message_headers_get_one (nf_soup.soup_message_headers_get_one)
#define soup_message_headers_replace (nf_soup.soup_message_headers_replace)
#define soup_message_headers_set_content_type (nf_soup.soup_message_headers_set_content_type)
#define soup_message_headers_set_encoding (nf_soup.soup_message_headers_set_encoding)
#define soup_server_accept_iostream (nf_soup.soup_server_accept_iostream)
#define soup_server_add_early_handler (nf_soup.soup_server_add_early_handler)
#define soup_server_add_handler (nf_soup.soup_server_add_handler)
#define soup_server_disconnect (nf_soup.soup_server_disconnect)
#define soup_server_get_type (nf_soup.soup_server_get_type)
#define soup_server_message_get_method (nf_soup.soup_server_message_get_method)
#define soup_server_message_get_remote_address (nf_soup.soup_server_message_get_remote_address)
#define soup_server_message_get_request_body (nf_soup.soup_server_message_get_request_body)
#define soup_server_message_get_request_headers (nf_soup.soup_server_message_get_request_headers)
#define soup_server_message_get_response_body (nf_soup.soup_server_message_get_response_body)
#define soup_server_message_get_response_headers (nf_soup.soup_server_message_get_response_headers)
#define soup_server_message_get_status (nf_soup.soup_server_message_get_status)
#define soup_server_message_get_uri (nf_soup.soup_server_message_get_uri)
#define soup_server_message_pause (nf_soup.soup_server_message_pause)
#define soup_server_message_set_response (nf_soup.soup_server_message_set_response)
#define soup_server_message_set_status (nf_soup.soup_server_message_set_status)
#define soup_server_message_steal_connection (nf_soup.soup_server_message_steal_connection)
#define soup_server_message_unpause (nf_soup.soup_server_message_unpause)
#define soup_status_get_phrase (nf_soup.soup_status_get_phrase)
#endif
