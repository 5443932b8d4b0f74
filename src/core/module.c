/* Loading modules at run time (see core/module.h for why, and where they are looked for). */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backprop/version.h"
#include "core/error.h"
#include "core/module.h"

/* The installed modules' folder relative to the installed programs' (CMakeLists.txt). */
#ifndef BP_MODULE_DIR_FROM_BIN
#define BP_MODULE_DIR_FROM_BIN ""
#endif

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
 * linked into the program (its link map entry has no name) the kernel's link is asked. A name
 * the loader found through a relative LD_LIBRARY_PATH entry is relative: it is made absolute
 * once, here, so that no later look-up depends on the current folder. */
static void find_image_dir(void) {
    Dl_info info;
    struct link_map *map = NULL;
    char image[1024];
    image_dir[0] = '\0';
    if (!dladdr1((void *)find_image_dir, &info, (void **)&map, RTLD_DL_LINKMAP)) return;
    if (map && map->l_name && map->l_name[0]) {
        if (!realpath(map->l_name, image)) return;
    } else {
        ssize_t n = readlink("/proc/self/exe", image, sizeof image - 1);
        if (n <= 0) return;
        image[n] = '\0';
    }
    char *slash = strrchr(image, '/');
    if (image[0] != '/' || !slash) return;
    if (slash == image)
        slash[1] = '\0';
    else
        *slash = '\0';
    snprintf(image_dir, sizeof image_dir, "%s", image);
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

/* dlopen's message names the file it could not open first: the module itself (not loadable on
 * this machine) or a library the module needs (then the runtime hint says what to check). */
static int names_file(const char *err, const char *file) {
    size_t n = strlen(file);
    return strncmp(err, file, n) == 0 && err[n] == ':';
}

/* What is wrong with a file that is there but cannot be a module, before dlopen is asked (whose
 * message for a folder or a text file would blame the runtime libraries). 1 when it is fine. */
static int check_file(bp_module *m, const char *path, const struct stat *st) {
    const char *wrong = NULL;
    unsigned char magic[4] = {0};
    if (S_ISDIR(st->st_mode)) {
        wrong = "is a folder, not a module file";
    } else if (!S_ISREG(st->st_mode)) {
        wrong = "is not a regular file";
    } else {
        FILE *f = fopen(path, "rb");
        if (!f) {
            fail(m, BP_ERR_UNSUPPORTED, "%s module %s cannot be read: %s", m->what, path,
                 strerror(errno));
            return 0;
        }
        size_t got = fread(magic, 1, sizeof magic, f);
        fclose(f);
        if (got < sizeof magic || memcmp(magic, "\177ELF", 4) != 0)
            wrong = "is not a shared library (it does not start with an ELF header)";
    }
    if (!wrong) return 1;
    fail(m, BP_ERR_UNSUPPORTED, "%s module %s %s; expected the file %s built with this library",
         m->what, path, wrong, m->file);
    return 0;
}

/* Tries one candidate, an absolute path (dlopen then searches nothing). Returns 1 when it is
 * loaded, or is there and failed (m->reason says why), 0 when nothing is there. */
static int try_path(bp_module *m, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        snprintf(m->path, sizeof m->path, "%s", path);
        fail(m, BP_ERR_UNSUPPORTED, "%s module %s cannot be read: %s", m->what, path,
             strerror(errno));
        return 1;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    if (!check_file(m, path, &st)) return 1;
    int flags = RTLD_NOW | (m->global ? RTLD_GLOBAL : RTLD_LOCAL);
    dlerror();
    void *h = dlopen(path, flags);
    if (!h) {
        const char *err = dlerror();
        if (!err) err = "unknown error";
        if (names_file(err, path))
            fail(m, BP_ERR_UNSUPPORTED, "%s module %s cannot be loaded: %s", m->what, path, err);
        else
            fail(m, BP_ERR_UNSUPPORTED, "%s module %s cannot be loaded: %s (%s)", m->what, path,
                 err, m->runtime_hint);
        return 1;
    }
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

static int try_in(bp_module *m, const char *dir, const char *sub) {
    char path[2048];
    size_t n = strlen(dir);
    const char *sep = n > 0 && dir[n - 1] == '/' ? "" : "/";
    int len = snprintf(path, sizeof path, "%s%s%s%s", dir, sep, sub, m->file);
    return len > 0 && (size_t)len < sizeof path && try_path(m, path);
}

/* The folders the loader would search for a library the core's image asks for (its run path,
 * LD_LIBRARY_PATH, the system folders), each tried by its absolute path. Entries that are empty
 * or relative (the loader reads them against the current folder) are skipped: a module is never
 * taken from wherever the program happens to run. */
static int try_loader_path(bp_module *m) {
    Dl_info info;
    struct link_map *map = NULL;
    if (!dladdr1((void *)try_loader_path, &info, (void **)&map, RTLD_DL_LINKMAP)) return 0;
    void *self = map && map->l_name && map->l_name[0] ? dlopen(map->l_name, RTLD_LAZY | RTLD_NOLOAD)
                                                      : dlopen(NULL, RTLD_LAZY);
    if (!self) return 0;
    int found = 0;
    Dl_serinfo size;
    Dl_serinfo *paths = NULL;
    if (dlinfo(self, RTLD_DI_SERINFOSIZE, &size) == 0 && (paths = malloc(size.dls_size))) {
        *paths = size;
        if (dlinfo(self, RTLD_DI_SERINFO, paths) == 0)
            for (unsigned i = 0; i < paths->dls_cnt && !found; i++)
                if (paths->dls_serpath[i].dls_name[0] == '/')
                    found = try_in(m, paths->dls_serpath[i].dls_name, "");
    }
    free(paths);
    dlclose(self);
    return found;
}

static void load(bp_module *m) {
    const char *env = getenv(m->env);
    if (env && env[0]) {
        if (env[0] != '/')
            fail(m, BP_ERR_UNSUPPORTED,
                 "%s=%s is not an absolute path (a module is never looked for in the current "
                 "folder); name the %s module by its absolute path",
                 m->env, env, m->what);
        else if (!try_path(m, env))
            fail(m, BP_ERR_UNSUPPORTED, "%s=%s: no such file (expected %s module there)", m->env,
                 env, m->what);
        return;
    }
    const char *dir = bp_core_image_dir();
    if (dir[0] && (try_in(m, dir, "backprop/") || try_in(m, dir, ""))) return;
    static const char from_bin[] = BP_MODULE_DIR_FROM_BIN;
    if (dir[0] && from_bin[0] && try_in(m, dir, BP_MODULE_DIR_FROM_BIN "/")) return;
    if (try_loader_path(m)) return;
    fail(m, BP_ERR_UNSUPPORTED,
         "%s module %s was not found (looked in %s/backprop, %s, %s/%s and the loader's "
         "absolute search folders; set %s to its absolute path)",
         m->what, m->file, dir[0] ? dir : "?", dir[0] ? dir : "?", dir[0] ? dir : "?",
         BP_MODULE_DIR_FROM_BIN, m->env);
}

const void *bp_module_load(bp_module *m) {
    pthread_mutex_lock(&module_lock);
    if (!m->tried) {
        m->tried = 1;
        if (m->built)
            load(m);
        else
            fail(m, BP_ERR_UNSUPPORTED,
                 "this build of backprop was made without %s (configure "
                 "with %s)",
                 m->what, m->configure);
    }
    const void *table = m->table;
    pthread_mutex_unlock(&module_lock);
    return table;
}
