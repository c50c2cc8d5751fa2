/*
 * soup-load.c: opens libsoup when the HTTP door first needs it (see
 * soup-load.h for why it is not linked in).
 */
#define NF_SOUP_LOADER
#include "http/soup-load.h"

#include <dlfcn.h>

NfSoupFunctions nf_soup;

static gboolean loaded;

gboolean nf_soup_load(GError **error)
{
  if (loaded)
    return TRUE;
  /* RTLD_NOW: libsoup's own symbols resolve here, so a broken install fails
   * now, not at the first request. */
  void *lib = dlopen(NF_SOUP_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "cannot load libsoup 3 (%s), which the HTTP server needs; install it with "
                "`apt-get install libsoup-3.0-0`",
                dlerror());
    return FALSE;
  }
  NfSoupFunctions table;
#define NF_SOUP_RESOLVE(name)                                                                      \
  if (!(*(void **)&table.name = dlsym(lib, #name))) {                                              \
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,                                           \
                "%s has no %s: a libsoup 3 older than the one this binary was built against; "     \
                "upgrade libsoup-3.0-0",                                                           \
                NF_SOUP_SONAME, #name);                                                            \
    dlclose(lib);                                                                                  \
    return FALSE;                                                                                  \
  }
  NF_SOUP_FUNCTIONS(NF_SOUP_RESOLVE)
#undef NF_SOUP_RESOLVE
  nf_soup = table;
  loaded = TRUE;
  return TRUE;
}
