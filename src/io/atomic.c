/* Atomic file replacement: an unnamed (O_TMPFILE) or named, locked temporary file beside the
 * target, renamed over it once complete; stale temporaries of dead writers removed. */
#define _GNU_SOURCE /* O_TMPFILE, AT_EMPTY_PATH */

#include "io/atomic.h"

#include "backprop/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/error.h"

int bp_atomic_use_tmpfile = 1;

static const char TMP_SUFFIX[] = ".tmp.";

char *bp_atomic_temp_name(const char *path) {
    size_t n = strlen(path) + sizeof TMP_SUFFIX + 24;
    char *tmp = malloc(n);
    if (tmp) snprintf(tmp, n, "%s%s%ld", path, TMP_SUFFIX, (long)getpid());
    return tmp;
}

/* The folder of path ("." for a bare name, "/" for a name in the root), malloc'd. */
static char *folder_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (dir) {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return dir;
}

/* ---- stale temporaries ------------------------------------------------------------------- */

/* The pid in name when it is "<base>.tmp.<digits>", else -1. */
static long temp_pid(const char *name, const char *base, size_t base_len) {
    if (strncmp(name, base, base_len) != 0) return -1;
    const char *p = name + base_len;
    if (strncmp(p, TMP_SUFFIX, sizeof TMP_SUFFIX - 1) != 0) return -1;
    p += sizeof TMP_SUFFIX - 1;
    long pid = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 10; ++p, ++digits)
        pid = pid * 10 + (*p - '0');
    return *p || digits == 0 || pid <= 0 || pid > INT_MAX ? -1 : pid;
}

/* A process of that pid runs on this host (EPERM: it does, as another user). */
static int process_runs(long pid) {
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* Removes dir/name when it is a regular file whose lock nobody holds (its writer is gone). */
static int remove_if_abandoned(int dirfd, const char *name) {
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat a, b;
    int removed = 0;
    if (fstat(fd, &a) == 0 && S_ISREG(a.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        removed = unlinkat(dirfd, name, 0) == 0;
    close(fd);
    return removed;
}

int bp_atomic_clean_stale(const char *path) {
    if (!path || !*path) return 0;
    char *dir = folder_of(path);
    if (!dir) return 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t base_len = strlen(base);
    int removed = 0, dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int listfd = dirfd >= 0 ? dup(dirfd) : -1;
    DIR *d = listfd >= 0 ? fdopendir(listfd) : NULL;
    if (!d && listfd >= 0) close(listfd);
    for (struct dirent *e; d && base_len && (e = readdir(d));) {
        long pid = temp_pid(e->d_name, base, base_len);
        if (pid < 0 || pid == (long)getpid() || process_runs(pid)) continue;
        removed += remove_if_abandoned(dirfd, e->d_name);
    }
    if (d) closedir(d);
    if (dirfd >= 0) close(dirfd);
    free(dir);
    return removed;
}

/* ---- the target ------------------------------------------------------------------------ */

/* A link of /proc (/proc/self/fd/1, and /dev/stdout or /dev/fd/N through it) names an open file
 * of a process, which a rename would not write to. */
static int in_proc(const char *p) {
    return strncmp(p, "/proc/", 6) == 0 || strcmp(p, "/proc") == 0;
}

/* dir-of(link)/to, or to when it is absolute; malloc'd. */
static char *beside(const char *link, const char *to) {
    if (to[0] == '/') return strdup(to);
    char *dir = folder_of(link);
    if (!dir) return NULL;
    size_t n = strlen(dir) + strlen(to) + 2;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s/%s", dir, to);
    free(dir);
    return out;
}

bp_status bp_atomic_target(const char *path, char **target) {
    *target = NULL;
    if (!path || !*path) return bp_error(BP_ERR_INVALID_ARGUMENT, "the path is empty");
    char *cur = strdup(path);
    for (int hops = 0; cur; ++hops) {
        struct stat sb;
        if (lstat(cur, &sb) != 0 || !S_ISLNK(sb.st_mode)) {
            *target = cur;
            return BP_OK;
        }
        char to[PATH_MAX];
        ssize_t n = hops < 40 ? readlink(cur, to, sizeof to - 1) : (errno = ELOOP, -1);
        if (n < 0 || in_proc(cur)) {
            int err = n < 0 ? errno : EINVAL;
            bp_status st =
                n < 0 ? bp_error(BP_ERR_IO, "%s: following the link %s failed: %s", path, cur,
                                 strerror(err))
                      : bp_error(BP_ERR_IO,
                                 "%s: it leads to %s, a process's open file (a /proc link), not "
                                 "a file that can be replaced: name a file",
                                 path, cur);
            free(cur);
            errno = err;
            return st;
        }
        to[n] = '\0';
        char *next = beside(cur, to);
        free(cur);
        cur = next;
    }
    return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", path);
}

const char *bp_atomic_kind(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    if (S_ISFIFO(mode)) return "a pipe (FIFO)";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

/* ---- opening ----------------------------------------------------------------------------- */

static bp_status open_fail(const char *path, const char *tmp, int err) {
    bp_status st = bp_error(BP_ERR_IO, "%s: creating %s failed: %s; %s is unchanged", path, tmp,
                            strerror(err ? err : EIO), path);
    errno = err;
    return st;
}

/* The named temporary, locked so that a cleaner (on any host) sees its writer is alive. */
static int open_named(const char *tmp) {
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd >= 0) (void)flock(fd, LOCK_EX | LOCK_NB);
    return fd;
}

/* The new file gets the owner, group and mode of the one it replaces (owner first: a change of
 * owner clears the set-id bits). */
static bp_status keep_attributes(bp_atomic_file *a, const struct stat *old) {
    struct stat now;
    const char *what = "its owner and group";
    int err = 0;
    if (fstat(a->fd, &now) != 0)
        err = errno;
    else if ((now.st_uid != old->st_uid || now.st_gid != old->st_gid) &&
             fchown(a->fd, old->st_uid, old->st_gid) != 0)
        err = errno;
    else if (fchmod(a->fd, old->st_mode & 07777) != 0)
        err = errno, what = "its mode";
    if (!err) return BP_OK;
    bp_error(BP_ERR_IO,
             "%s: the new file cannot keep %s (user %ld, group %ld, mode %04o): %s; %s is "
             "unchanged",
             a->path, what, (long)old->st_uid, (long)old->st_gid, (unsigned)(old->st_mode & 07777),
             strerror(err), a->path);
    errno = err;
    return BP_ERR_IO;
}

bp_status bp_atomic_open(bp_atomic_file *a, const char *path) {
    memset(a, 0, sizeof *a);
    a->fd = -1;
    char *target = NULL;
    bp_status st = bp_atomic_target(path, &target);
    if (st != BP_OK) return st;
    struct stat sb;
    int exists = stat(target, &sb) == 0;
    if (exists && !S_ISREG(sb.st_mode)) {
        int err = S_ISDIR(sb.st_mode) ? EISDIR : EINVAL;
        bp_error(BP_ERR_IO, "%s: cannot replace it: it is %s (%s), not a regular file", path,
                 bp_atomic_kind(sb.st_mode), strerror(err));
        free(target);
        errno = err;
        return BP_ERR_IO;
    }
    a->path = target;
    a->tmp = bp_atomic_temp_name(target);
    char *dir = folder_of(target);
    if (!a->tmp || !dir) {
        free(dir);
        bp_atomic_abort(a);
        return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", path);
    }
    bp_atomic_clean_stale(target);
#ifdef O_TMPFILE
    if (bp_atomic_use_tmpfile) a->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
    a->unnamed = a->fd >= 0;
#endif
    free(dir);
    if (a->fd < 0) a->fd = open_named(a->tmp);
    if (a->fd < 0) {
        int err = errno;
        st = open_fail(target, a->tmp, err);
        bp_atomic_abort(a);
        errno = err;
        return st;
    }
    if (exists && (st = keep_attributes(a, &sb)) != BP_OK) {
        int err = errno;
        bp_atomic_abort(a);
        errno = err;
        return st;
    }
    return BP_OK;
}

/* ---- committing -------------------------------------------------------------------------- */

/* Copies the unnamed file's bytes into a new named temporary (where linking is refused). */
static int copy_to_named(bp_atomic_file *a, int (*fsync_fn)(int)) {
    int out = open_named(a->tmp);
    if (out < 0) return -1;
    char buf[1 << 16];
    off_t at = 0;
    int err = 0;
    for (;;) {
        ssize_t n = pread(a->fd, buf, sizeof buf, at);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) err = errno;
        if (n <= 0) break;
        for (ssize_t done = 0; done < n && !err;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno != EINTR) err = errno;
            if (w > 0) done += w;
        }
        if (err) break;
        at += n;
    }
    if (!err && fsync_fn(out) != 0) err = errno ? errno : EIO;
    if (err) {
        close(out);
        unlink(a->tmp);
        errno = err;
        return -1;
    }
    close(a->fd);
    a->fd = out;
    a->unnamed = 0;
    return 0;
}

/* Gives the unnamed file its temporary name. */
static int name_it(bp_atomic_file *a, int (*fsync_fn)(int)) {
#ifdef O_TMPFILE
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", a->fd);
    for (int tries = 0; tries < 2; ++tries) {
        if (linkat(AT_FDCWD, proc, AT_FDCWD, a->tmp, AT_SYMLINK_FOLLOW) == 0 ||
            linkat(a->fd, "", AT_FDCWD, a->tmp, AT_EMPTY_PATH) == 0) {
            a->unnamed = 0;
            return 0;
        }
        if (errno != EEXIST) break;
        unlink(a->tmp); /* a dead process of our pid left it */
    }
#endif
    return copy_to_named(a, fsync_fn);
}

/* Flushes the folder so the rename itself survives a crash. Best effort where the filesystem
 * cannot sync folders (EINVAL, EROFS); any other error is reported. */
static bp_status sync_folder(const char *path) {
    char *dir = folder_of(path);
    if (!dir) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", path);
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    int rc = fd >= 0 ? fsync(fd) : -1, err = errno;
    if (fd >= 0) close(fd);
    bp_status st = BP_OK;
    if (rc != 0 && err != EINVAL && err != EROFS)
        st = bp_error(BP_ERR_IO,
                      "%s: the new file is in place, but syncing its directory %s "
                      "failed: %s",
                      path, dir, strerror(err));
    free(dir);
    return st;
}

static bp_status step_fail(bp_atomic_file *a, const char *what, int err) {
    err = err ? err : EIO;
    bp_status st = bp_error(BP_ERR_IO, "%s: %s %s failed: %s; %s is unchanged", a->path, what,
                            a->tmp, strerror(err), a->path);
    bp_atomic_abort(a);
    errno = err;
    return st;
}

bp_status bp_atomic_commit(bp_atomic_file *a, int (*fsync_fn)(int),
                           int (*rename_fn)(const char *, const char *)) {
    if (!fsync_fn) fsync_fn = fsync;
    if (!rename_fn) rename_fn = rename;
    if (fsync_fn(a->fd) != 0) return step_fail(a, "fsync of", errno);
    if (a->unnamed && name_it(a, fsync_fn) != 0) return step_fail(a, "naming", errno);
    if (rename_fn(a->tmp, a->path) != 0) {
        int err = errno ? errno : EIO;
        bp_status st = bp_error(BP_ERR_IO, "%s: renaming %s over it failed: %s; %s is unchanged",
                                a->path, a->tmp, strerror(err), a->path);
        bp_atomic_abort(a);
        errno = err;
        return st;
    }
    close(a->fd);
    a->fd = -1;
    a->unnamed = 1; /* nothing of ours is left under the temporary name */
    bp_status st = sync_folder(a->path);
    bp_atomic_abort(a);
    return st;
}

void bp_atomic_abort(bp_atomic_file *a) {
    int err = errno;
    if (a->path && a->fd >= 0) close(a->fd);
    if (a->path && !a->unnamed && a->tmp) unlink(a->tmp);
    free(a->path);
    free(a->tmp);
    memset(a, 0, sizeof *a);
    a->fd = -1;
    errno = err;
}

/* ---- the public handle (backprop/file.h): the writer above, through stdio ---------------- */

struct bp_file {
    FILE *stream; /* on a dup of file.fd, so fclose leaves the writer's descriptor open */
    bp_atomic_file file;
};

static bp_status null_arg(const char *fn, const char *what) {
    return bp_error(BP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, what);
}

bp_file *bp_file_open(const char *path, bp_status *status) {
    bp_file *f = path ? calloc(1, sizeof *f) : NULL;
    bp_status st = !path ? null_arg("bp_file_open", "path")
                   : !f  ? bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", path)
                         : bp_atomic_open(&f->file, path);
    if (st == BP_OK) {
        int fd = dup(f->file.fd);
        f->stream = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!f->stream) {
            int err = errno;
            if (fd >= 0) close(fd);
            st = bp_error(BP_ERR_IO, "%s: cannot open a stream on the new file: %s", path,
                          strerror(err));
            bp_atomic_abort(&f->file);
            errno = err;
        }
    }
    bp_set_status(status, st);
    if (st == BP_OK) return f;
    int err = errno;
    free(f);
    errno = err;
    return NULL;
}

FILE *bp_file_stream(bp_file *file) {
    if (!file) null_arg("bp_file_stream", "file");
    return file ? file->stream : NULL;
}

bp_status bp_file_commit(bp_file *file) {
    if (!file) return null_arg("bp_file_commit", "file");
    int err = ferror(file->stream) ? EIO : 0;
    if (fflush(file->stream) != 0 && !err) err = errno;
    if (fclose(file->stream) != 0 && !err) err = errno;
    bp_status st;
    if (err) {
        st = bp_error(BP_ERR_IO, "%s: writing the new file failed: %s", file->file.path,
                      strerror(err));
        bp_atomic_abort(&file->file);
    } else {
        st = bp_atomic_commit(&file->file, NULL, NULL);
        err = errno;
    }
    free(file);
    errno = err;
    return st;
}

void bp_file_abort(bp_file *file) {
    if (!file) return;
    int err = errno;
    fclose(file->stream);
    bp_atomic_abort(&file->file);
    free(file);
    errno = err;
}

char *bp_file_target(const char *path, bp_status *status) {
    char *target = NULL;
    bp_set_status(status,
                  path ? bp_atomic_target(path, &target) : null_arg("bp_file_target", "path"));
    return target;
}

char *bp_file_temp_name(const char *target) {
    return target ? bp_atomic_temp_name(target) : NULL;
}

const char *bp_file_kind(mode_t mode) {
    return bp_atomic_kind(mode);
}

/* ---- checking an output before work starts ------------------------------------------------ */

static const char *base_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Creates (and removes) the temporary file of target in dir, which proves the folder takes a
 * file of that name, with the owner and group of the file it replaces (old, when there is one). */
static bp_status probe(const char *path, const char *target, const char *dir,
                       const struct stat *old) {
    char *tmp = bp_atomic_temp_name(target);
    if (!tmp) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", path);
    long name_max = pathconf(dir, _PC_NAME_MAX);
    size_t tmp_len = strlen(base_of(tmp));
    int fd = name_max > 0 && tmp_len > (size_t)name_max
                 ? (errno = ENAMETOOLONG, -1)
                 : open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int err = errno;
    bp_status st = BP_OK;
    if (fd >= 0) {
        if (old && fchown(fd, old->st_uid, old->st_gid) != 0)
            st = bp_error(BP_ERR_IO,
                          "cannot replace '%s': it belongs to user %ld, group %ld, which a new "
                          "file of ours cannot be given (%s): write it elsewhere",
                          path, (long)old->st_uid, (long)old->st_gid, strerror(err = errno));
        close(fd);
        unlink(tmp);
    } else if (err == ENAMETOOLONG) {
        st = bp_error(BP_ERR_IO,
                      "cannot write '%s': its name is %zu bytes, %zu with the suffix '%s' of the "
                      "file written before it is renamed, over the %ld a name may have in '%s': "
                      "choose a shorter name",
                      path, strlen(base_of(target)), tmp_len, tmp + strlen(target),
                      name_max > 0 ? name_max : 255, dir);
    } else if (err !=
               EEXIST) { /* EEXIST: a dead process of our pid left one; a write replaces it */
        st = bp_error(BP_ERR_IO, "cannot write '%s': cannot create a file in folder '%s': %s", path,
                      dir, strerror(err));
    }
    free(tmp);
    errno = err;
    return st;
}

/* The target's folder is there and is a folder; then the probe. */
static bp_status check_target(const char *path, const char *target, const struct stat *old) {
    char *dir = folder_of(target);
    if (!dir) return bp_error(BP_ERR_OUT_OF_MEMORY, "%s: no memory", path);
    struct stat db;
    const char *bad = NULL;
    if (stat(dir, &db) != 0)
        bad = errno == ENOENT || errno == ENOTDIR ? "does not exist" : strerror(errno);
    else if (!S_ISDIR(db.st_mode))
        bad = "is not a folder";
    bp_status st = bad ? bp_error(BP_ERR_IO, "cannot write '%s': folder '%s' %s", path, dir, bad)
                       : probe(path, target, dir, old);
    free(dir);
    return st;
}

bp_status bp_file_check(const char *path) {
    if (!path) return null_arg("bp_file_check", "path");
    if (!path[0]) return bp_error(BP_ERR_INVALID_ARGUMENT, "bp_file_check: the path is empty");
    const char *base = base_of(path);
    struct stat sb;
    if (!base[0] || !strcmp(base, ".") || !strcmp(base, "..") ||
        (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)))
        return bp_error(BP_ERR_INVALID_ARGUMENT, "'%s' is a folder; give a file name", path);
    char *target = NULL;
    bp_status st = bp_atomic_target(path, &target);
    if (st != BP_OK) return st;
    int exists = stat(target, &sb) == 0;
    if (exists && !S_ISREG(sb.st_mode))
        st = bp_error(BP_ERR_INVALID_ARGUMENT,
                      "'%s' is %s, not a regular file; it cannot be replaced: give a file name",
                      path, bp_atomic_kind(sb.st_mode));
    else
        st = check_target(path, target, exists ? &sb : NULL);
    free(target);
    return st;
}

/* ---- two names of one file ---------------------------------------------------------------- */

/* A file not there yet by its folder, resolved, and its name; NULL when the folder cannot be. */
static char *resolved_name(const char *path) {
    char *dir = folder_of(path), real[PATH_MAX];
    char *out = NULL;
    if (dir && realpath(dir, real)) {
        size_t n = strlen(real) + strlen(base_of(path)) + 2;
        if ((out = malloc(n))) snprintf(out, n, "%s/%s", real, base_of(path));
    }
    free(dir);
    return out;
}

/* Whether two names of one file differ through a link: either is a symlink, or (both there)
 * they resolve apart, two names of one inode. */
static int through_link(const char *a, const char *b, int both_exist) {
    struct stat la, lb;
    if ((lstat(a, &la) == 0 && S_ISLNK(la.st_mode)) || (lstat(b, &lb) == 0 && S_ISLNK(lb.st_mode)))
        return 1;
    char ra[PATH_MAX], rb[PATH_MAX];
    return both_exist && realpath(a, ra) && realpath(b, rb) && strcmp(ra, rb) != 0;
}

int bp_file_same(const char *a, const char *b, const char **how) {
    if (how) *how = "";
    if (!a || !b) return 0;
    struct stat sa, sb;
    int in_a = stat(a, &sa) == 0, in_b = stat(b, &sb) == 0, same = 0;
    if (in_a && in_b) {
        same = sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    } else if (!in_a && !in_b) {
        char *ra = resolved_name(a), *rb = resolved_name(b);
        same = ra && rb && strcmp(ra, rb) == 0;
        free(ra);
        free(rb);
    }
    if (same && how && strcmp(a, b) != 0)
        *how = through_link(a, b, in_a && in_b) ? "through a link" : "by another path";
    return same;
}
