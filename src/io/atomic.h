/* Files replaced atomically, for checkpoints (safetensors.c) and the command's other outputs.
 *
 * A new file is written beside its target, flushed to disk and renamed over it, so a crash, a
 * full disk or a failed write leaves the previous file as it was. Where the filesystem
 * supports O_TMPFILE the file being written has no name at all until it is complete (a
 * process killed while writing leaves nothing behind); it is then linked as "<path>.tmp.<pid>"
 * and renamed over the target. Elsewhere it is written under that name from the start, locked
 * (flock) while its writer lives.
 *
 * The target is the file a write to the path lands on: a symlink (a chain of them) is followed
 * and its target replaced, so the link stays a link; a link into /proc (/dev/stdout, /dev/fd/N)
 * is refused, as is a target that exists and is not a regular file (a folder, a device, a FIFO,
 * a socket). A target that exists keeps its owner, group and mode: the new file is given them
 * before a byte is written, or the target is not replaced.
 *
 * Every open first removes the temporary files of the same target left by writers that no
 * longer run: "<name>.tmp.<pid>" beside it whose process is gone (kill(pid, 0) fails with
 * ESRCH) and whose lock nobody holds, so a writer on another host of a shared filesystem keeps
 * its file. */
#ifndef BP_IO_ATOMIC_H
#define BP_IO_ATOMIC_H

#include <stddef.h>
#include <sys/types.h>

#include "backprop/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_atomic_file {
    int fd;      /* open for reading and writing, at offset 0 */
    int unnamed; /* O_TMPFILE: no name until bp_atomic_commit */
    char *path;  /* the target */
    char *tmp;   /* "<path>.tmp.<pid>" */
} bp_atomic_file;

/* Starts replacing path's target (see above; a->path is that target): cleans its stale
 * temporary files, then opens the new file (mode 0666 less the umask, like an ordinary create,
 * or the owner, group and mode of the file it replaces). On failure BP_ERR_IO
 * (BP_ERR_OUT_OF_MEMORY) naming path, with errno kept, and *a holds nothing to release. */
bp_status bp_atomic_open(bp_atomic_file *a, const char *path);

/* The file a write to path lands on: path with its symlinks followed, malloc'd in *target (a
 * dangling link gives the file it would create). BP_ERR_IO naming path for a link into /proc,
 * a loop or an unreadable link; *target is then NULL. */
bp_status bp_atomic_target(const char *path, char **target);

/* "a folder", "a device", "a pipe (FIFO)", "a socket", "a regular file": what a mode is, for
 * messages. */
const char *bp_atomic_kind(mode_t mode);

/* Makes the written file path's content: fsync, a name (for an unnamed file), rename over
 * path, fsync of the folder. fsync_fn and rename_fn (NULL: the real calls) are the test seam of
 * safetensors.h. On failure the temporary file is removed, path is untouched, the message
 * names the step, and errno is kept. *a is released either way. */
bp_status bp_atomic_commit(bp_atomic_file *a, int (*fsync_fn)(int),
                           int (*rename_fn)(const char *, const char *));

/* Drops the new file; path is untouched. Accepts a released *a. */
void bp_atomic_abort(bp_atomic_file *a);

/* "<path>.tmp.<pid>" for this process, malloc'd (NULL when out of memory). */
char *bp_atomic_temp_name(const char *path);

/* Removes the stale temporary files of path (see above); the number removed. */
int bp_atomic_clean_stale(const char *path);

/* Test seam: 0 makes bp_atomic_open write under the temporary name, as on a filesystem
 * without O_TMPFILE. */
extern int bp_atomic_use_tmpfile;

#ifdef __cplusplus
}
#endif

#endif
