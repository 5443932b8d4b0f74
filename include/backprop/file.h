/* An output file replaced atomically: what the library does for its checkpoints, for a
 * program's own outputs (metrics, predictions, reports).
 *
 * bp_file_open starts a new file beside the target; the program writes it through a stdio
 * stream; bp_file_commit flushes it to disk and renames it over the target, so a crash, a full
 * disk or a failed write leaves the previous file as it was and readers never see half a file.
 * The target is the file a write to the path lands on: a symlink (a chain of them) is followed
 * and its target replaced, so the link stays a link; a link into /proc (/dev/stdout, /dev/fd/N)
 * is refused, as is a target that exists and is not a regular file (a folder, a device, a FIFO,
 * a socket). A target that exists keeps its owner, group and mode (or is not replaced); a new
 * one gets 0666 less the umask. Temporary files "<target>.tmp.<pid>" left by writers that no
 * longer run are removed when a file of the same target is opened.
 *
 * Failures are BP_ERR_IO naming the path and the step (bp_last_error), with errno kept for a
 * program that words its own message; a NULL argument is BP_ERR_INVALID_ARGUMENT.
 * Lifetime: commit and abort both release the handle.
 * Threads: a handle is used by one thread at a time; distinct handles are independent. */
#ifndef BACKPROP_FILE_H
#define BACKPROP_FILE_H

#include <stdio.h>
#include <sys/types.h>

#include "export.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_file bp_file;

/* Starts replacing path's target; NULL on failure, with *status (when not NULL) set. */
BP_API bp_file *bp_file_open(const char *path, bp_status *status);

/* The stream to write the new content to (NULL for a NULL file). Its descriptor
 * (fileno) may also be written and read; leave closing it to commit or abort. */
BP_API FILE *bp_file_stream(bp_file *file);

/* Makes what was written the target's content (flush, fsync, rename, fsync of the folder). On
 * failure, a write error of the stream included, the target is untouched and nothing is left
 * behind. Releases file either way. */
BP_API bp_status bp_file_commit(bp_file *file);

/* Drops the new file and releases the handle; the target is untouched. Accepts NULL. */
BP_API void bp_file_abort(bp_file *file);

/* Checks before work starts that path can be written as bp_file_open and bp_file_commit write
 * it, so a program that would fail at its first save fails before its work: the target (links
 * followed, as above) is a regular file or nothing, its folder exists, and a file of its
 * temporary name, with the owner and group of the file it replaces, can be created there (and
 * is removed again): that proves the folder writable, the filesystem not read-only and the
 * name short enough with its suffix. BP_ERR_INVALID_ARGUMENT when path cannot name an output
 * (NULL or empty; a folder, or a name ending in '/', "." or ".."; a device, FIFO or socket),
 * BP_ERR_IO when the place refuses it (no such folder, no permission, /proc, a name too long); the
 * message names the path, and the folder where it is the cause. A full disk is found only by
 * writing. */
BP_API bp_status bp_file_check(const char *path);

/* For wording one's own check (bp_file_open and bp_file_check tell the rest): */

/* The file a write to path lands on, symlinks followed (a dangling link gives the file it would
 * create), malloc'd (release with free). NULL with BP_ERR_IO for a link into /proc, a loop or an
 * unreadable link. */
BP_API char *bp_file_target(const char *path, bp_status *status);

/* The name the new file of target is written under ("<target>.tmp.<pid>"), malloc'd (release
 * with free); NULL for a NULL target or when out of memory. Its length is what the target's
 * folder must take. */
BP_API char *bp_file_temp_name(const char *target);

/* Whether paths a and b name one file, so that writing one replaces the other: both exist and
 * are one inode (links followed: a symlink or a hard link is the file it reaches), or neither
 * exists and both name one entry of one folder (the folders resolved). 1 or 0; 0 for a NULL
 * path. *how (may be NULL) says how two names reach the file: "" for the same name, "through a
 * link" (either is a symlink, or two names of one inode), "by another path" (a/../a, ./a). */
BP_API int bp_file_same(const char *a, const char *b, const char **how);

/* What a file of this st_mode is, for messages: "a regular file", "a folder", "a device",
 * "a pipe (FIFO)", "a socket", "not a regular file". */
BP_API const char *bp_file_kind(mode_t mode);

#ifdef __cplusplus
}
#endif

#endif
