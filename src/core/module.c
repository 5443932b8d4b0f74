/* Loading modules at run time (see core/module.h for why, and where they are looked for). */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backprop/version.h"
#include "core/error.h"
#include "core/module.h"

static pthread_mutex_t module_lock = PTHREAD_MUTEX_INITIALIZER;

static bp_status host_set_error(bp_status status, const char *detail) {
    return bp_error(status, "%s", detail);
}

static const bp_module_host host = {BP_MODULE_ABI, BP_VERSION_STRING, host_set_error};

static void fail(bp_module *m, bp_status status, const char *fmt, ...) BP_PRINTF(3, 4);

static void fail(bp_module *m, bp_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->reason, sizeof m->reason, fmt, ap);
    va_end(ap);
    m->status = status;
}

static char image_dir[1024];
static pthread_once_t image_dir_once = PTHREAD_ONCE_INIT;

/* dladdr names the main program by its argv[0] ("backprop" when found on PATH), so for a core
 * linked into the program (its link map entry has no name) the kernel's link is asked. */
static void find_image_dir(void) {
    Dl_info info;
    struct link_map *map = NULL;
    if (!dladdr1((void *)find_image_dir, &info, (void **)&map, RTLD_DL_LINKMAP)) return;
    if (map && map->l_name && map->l_name[0]) {
        snprintf(image_dir, sizeof image_dir, "%s", map->l_name);
    } else {
        ssize_t n = readlink("/proc/self/exe", image_dir, sizeof image_dir - 1);
        if (n <= 0) {
            image_dir[0] = '\0';
            return;
        }
        image_dir[n] = '\0';
    }
    char *slash = strrchr(image_dir, '/');
    if (!slash)
        snprintf(image_dir, sizeof image_dir, ".");
    else if (slash == image_dir)
        slash[1] = '\0';
    else
        *slash = '\0';
}

const char *bp_core_image_dir(void) {
    pthread_once(&image_dir_once, find_image_dir);
    return image_dir;
}

/* Checks the table a module's entry returned against this core. */
static int accept_table(bp_module *m, const void *table) {
    if (!table) {
        fail(m, BP_ERR_UNSUPPORTED,
             "%s module %s refused this library (backprop %s, module interface %u): it was built "
             "with another version; install the module built with this library",
             m->what, m->path, BP_VERSION_STRING, (unsigned)BP_MODULE_ABI);
        return 0;
    }
    const bp_module_header *h = table;
    if (h->abi != BP_MODULE_ABI || !h->version || strcmp(h->version, BP_VERSION_STRING) != 0) {
        fail(m, BP_ERR_UNSUPPORTED,
             "%s module %s is from backprop %s (module interface %u), this library is %s "
             "(interface %u): install the module that was built with this library",
             m->what, m->path, h->version ? h->version : "?", (unsigned)h->abi, BP_VERSION_STRING,
             (unsigned)BP_MODULE_ABI);
        return 0;
    }
    m->table = table;
    m->status = BP_OK;
    return 1;
}

/* dlopen's message names the file it could not open first: the module itself (not there) or a
 * library the module needs (there, but not loadable). */
static int names_file(const char *err, const char *file) {
    size_t n = strlen(file);
    return strncmp(err, file, n) == 0 && err[n] == ':';
}

/* Tries one candidate. Returns 1 when it is loaded (or failed in a way worth reporting: then
 * m->reason is set), 0 when it is not there at all. */
static int try_path(bp_module *m, const char *path, int must_exist) {
    if (must_exist && access(path, F_OK) != 0) return 0;
    int flags = RTLD_NOW | (m->global ? RTLD_GLOBAL : RTLD_LOCAL);
    dlerror();
    void *h = dlopen(path, flags);
    if (!h) {
        const char *err = dlerror();
        if (!must_exist && err && names_file(err, path)) return 0;
        snprintf(m->path, sizeof m->path, "%s", path);
        fail(m, BP_ERR_UNSUPPORTED, "%s module %s cannot be loaded: %s (%s)", m->what, path,
             err ? err : "unknown error", m->runtime_hint);
        return 1;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    bp_module_entry entry = (bp_module_entry)dlsym(h, m->entry);
    if (!entry) {
        fail(m, BP_ERR_UNSUPPORTED, "%s module %s has no entry point %s: not a backprop module",
             m->what, path, m->entry);
        dlclose(h);
        return 1;
    }
    if (accept_table(m, entry(&host)))
        m->handle = h; /* kept loaded for the life of the process */
    else
        dlclose(h);
    return 1;
}

static void load(bp_module *m) {
    const char *env = getenv(m->env);
    if (env && env[0]) {
        if (!try_path(m, env, 1))
            fail(m, BP_ERR_UNSUPPORTED, "%s=%s: no such file (expected %s module there)", m->env,
                 env, m->what);
        return;
    }
    const char *dir = bp_core_image_dir();
    char path[2048];
    if (dir[0]) {
        snprintf(path, sizeof path, "%s/backprop/%s", dir, m->file);
        if (try_path(m, path, 1)) return;
        snprintf(path, sizeof path, "%s/%s", dir, m->file);
        if (try_path(m, path, 1)) return;
    }
    if (try_path(m, m->file, 0)) return;
    fail(m, BP_ERR_UNSUPPORTED,
         "%s module %s was not found (looked in %s/backprop, %s and the library path; set %s to "
         "its path)",
         m->what, m->file, dir[0] ? dir : "?", dir[0] ? dir : "?", m->env);
}

const void *bp_module_load(bp_module *m) {
    pthread_mutex_lock(&module_lock);
    if (!m->tried) {
        m->tried = 1;
        if (m->built)
            load(m);
        else
            fail(m, BP_ERR_UNSUPPORTED, "this build of backprop has no %s (configure with %s)",
                 m->what, m->configure);
    }
    const void *table = m->table;
    pthread_mutex_unlock(&module_lock);
    return table;
}
