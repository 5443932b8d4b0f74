/* What the command reads and writes, checked before any work: no output overwrites an input
 * or another output, and every output can be written (its folder, its permissions, the length
 * of its name with the temporary suffix). A run that would fail at its first save fails here
 * instead, before an epoch of training is lost. */
#include <string.h>

#include "cli.h"

#define MAX_FILES 64

/* A file the command reads or writes; bp_file_same tells whether two are one. */
typedef struct file_ref {
    char flag[80];           /* "--save", "--train (the run's, from m.st)", "the checkpoint" */
    const char *path, *file; /* as given, and as compared: standard input ("-") is /dev/stdin,
                                which a redirection (< file) makes a file like any other */
    int in_place;            /* the checkpoint a resumed run saves back to */
} file_ref;

typedef struct file_set {
    file_ref f[MAX_FILES];
    int n;
} file_set;

void cli_folder_of(const char *path, char *buf, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(buf, size, ".");
    else
        snprintf(buf, size, "%.*s", slash == path ? 1 : (int)(slash - path), path);
}

static const char *base_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void add(file_set *s, const char *flag, const char *path, int in_place) {
    if (!path || !path[0] || s->n == MAX_FILES) return;
    file_ref *r = &s->f[s->n++];
    snprintf(r->flag, sizeof r->flag, "%.79s", flag);
    r->path = path;
    r->file = path;
    r->in_place = in_place;
}

/* "--train" for a flag the user gave; "the run's --train (from m.st)" for one a checkpoint
 * supplied. */
static void flag_label(const cli_options *o, int i, const char *checkpoint, char *buf,
                       size_t size) {
    if (o->given[i] || !checkpoint)
        snprintf(buf, size, "--%s", cli_option_name(i));
    else
        snprintf(buf, size, "the run's --%s (stored in %.40s)", cli_option_name(i), checkpoint);
}

/* --input - and --output - are standard input and output: no file to compare or check. */
static int standard_stream(const char *name, const char *path) {
    return strcmp(path, "-") == 0 && (!strcmp(name, "input") || !strcmp(name, "output"));
}

static void collect_inputs(int cmd, const cli_options *o, const char *checkpoint, file_set *in) {
    char label[128];
    for (int i = 0; i < cli_option_count(); ++i) {
        if (!cli_option_has(i, OF_IN)) continue;
        if (standard_stream(cli_option_name(i), o->text[i])) {
            snprintf(label, sizeof label, "--%s", cli_option_name(i));
            add(in, label, "-", 0);
            in->f[in->n - 1].file = "/dev/stdin";
            continue;
        }
        flag_label(o, i, strcmp(cli_option_name(i), "resume") ? checkpoint : NULL, label,
                   sizeof label);
        add(in, label, o->text[i], 0);
    }
    if (cmd != CMD_TRAIN && cmd != CMD_LRFIND && checkpoint)
        add(in, "the checkpoint", checkpoint, 0);
    static char named[4][1024]; /* --data's files: named datasets are inputs too */
    for (int k = 0; o->data[0] && k < 4; ++k)
        if (cli_named_file(o, k, named[k], sizeof named[k]) == 0) {
            snprintf(label, sizeof label, "--data %.40s (%.60s)", o->data, base_of(named[k]));
            add(in, label, named[k], 0);
        }
}

/* The outputs of this command: the options that name files it writes. In a data-parallel run
 * only rank 0 writes. */
static void collect_outputs(int cmd, const cli_options *o, file_set *out) {
    if (cli_rank > 0) return;
    char label[96];
    for (int i = 0; i < cli_option_count(); ++i) {
        if (!cli_option_has(i, OF_OUT) || !cli_option_of(i, cmd)) continue;
        const char *name = cli_option_name(i);
        if (standard_stream(name, o->text[i])) continue;
        snprintf(label, sizeof label, "--%s", name);
        add(out, label, o->text[i], cmd == CMD_TRAIN && !strcmp(name, "save"));
    }
    /* Without --save a resumed run saves back to the checkpoint it continues. */
    if (cmd == CMD_TRAIN && o->resume[0] && !o->save[0])
        add(out, "--resume (saved back to)", o->resume, 1);
}

/* how: the way two names reach the file (bp_file_same). */
static int clash(int cmd, const file_ref *out, const file_ref *other, int other_is_input,
                 const char *how) {
    char note[64] = "";
    if (other->file != other->path) /* standard input, compared as /dev/stdin */
        how = "standard input is redirected from it";
    if (how[0])
        snprintf(note, sizeof note, " (%s%s)", other_is_input ? "the same file, " : "", how);
    if (other_is_input)
        return cli_usage_error(cmd,
                               "%s '%s' would overwrite %s '%s'%s: write it elsewhere (an output "
                               "never replaces a file the command reads)",
                               out->flag, out->path, other->flag, other->path, note);
    return cli_usage_error(cmd, "%s '%s' and %s '%s' are the same file%s: give each its own name",
                           other->flag, other->path, out->flag, out->path, note);
}

static int check_clashes(int cmd, const file_set *in, const file_set *out) {
    const char *how;
    for (int a = 0; a < out->n; ++a) {
        const file_ref *o = &out->f[a];
        for (int b = 0; b < in->n; ++b) {
            int resumed = o->in_place && strcmp(in->f[b].flag, "--resume") == 0;
            if (!resumed && bp_file_same(o->file, in->f[b].file, &how))
                return clash(cmd, o, &in->f[b], 1, how);
        }
        for (int b = 0; b < a; ++b)
            if (bp_file_same(o->file, out->f[b].file, &how))
                return clash(cmd, o, &out->f[b], 0, how);
    }
    return 0;
}

/* The output can be written (bp_file_check): a path that cannot name an output is a usage
 * error, a place that refuses it a failure. */
int cli_check_writable(int cmd, const char *flag, const char *path) {
    bp_status st = bp_file_check(path);
    if (st == BP_OK) return 0;
    cli_fail(cmd, "%s: %s", flag, bp_last_error());
    return st == BP_ERR_INVALID_ARGUMENT ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
}

int cli_check_names(int cmd, const cli_options *o) {
    for (int i = 0; i < cli_option_count(); ++i) {
        if (!(cli_option_has(i, OF_IN) || cli_option_has(i, OF_OUT)) || !o->given[i]) continue;
        if (o->text[i][0]) continue;
        return cli_usage_error(
            cmd, "--%s: the file name is empty%s", cli_option_name(i),
            cli_option_has(i, OF_OUT) ? " (leave the option out to write nothing)" : "");
    }
    return 0;
}

int cli_check_outputs(int cmd, const cli_options *o, const char *checkpoint) {
    file_set in, out;
    in.n = out.n = 0;
    collect_inputs(cmd, o, checkpoint, &in);
    collect_outputs(cmd, o, &out);
    int rc = check_clashes(cmd, &in, &out);
    for (int k = 0; k < out.n && !rc; ++k)
        rc = cli_check_writable(cmd, out.f[k].flag, out.f[k].path);
    return rc;
}
