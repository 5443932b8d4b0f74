// The atomic writer (src/io/atomic.h) and what it replaces: an existing file keeps its owner,
// group and mode; a symlink is written through to its target (atomically, beside the target)
// and stays a link; a folder, a device, a FIFO, a socket or a /proc link is refused with what
// it is, and nothing is left behind. Every checkpoint, --metrics, --plot and predict output is
// written by it, the CLI's through the public handle of backprop/file.h (the last cases).
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "backprop/backprop.h"
#include "backprop/file.h"
#include "io/atomic.h"
#include "support_files.h"

namespace {

std::string read_all(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Replaces path with bytes through the writer; the status, and the message on failure.
bp_status replace(const std::string &path, const std::string &bytes, std::string *msg = nullptr) {
    bp_atomic_file a;
    bp_status st = bp_atomic_open(&a, path.c_str());
    if (st == BP_OK) {
        EXPECT_EQ((ssize_t)bytes.size(), write(a.fd, bytes.data(), bytes.size()));
        st = bp_atomic_commit(&a, nullptr, nullptr);
    }
    if (msg) *msg = st == BP_OK ? "" : bp_last_error();
    return st;
}

std::set<std::string> entries(const std::string &dir) {
    std::set<std::string> out;
    DIR *d = opendir(dir.c_str());
    for (dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) out.insert(e->d_name);
    if (d) closedir(d);
    return out;
}

bool is_link(const std::string &path) {
    struct stat sb;
    return lstat(path.c_str(), &sb) == 0 && S_ISLNK(sb.st_mode);
}

class AtomicFile : public ::testing::Test {
  protected:
    bpt::TempDir dir_;
};

TEST_F(AtomicFile, AReplacedFileKeepsItsMode) {
    for (mode_t mode : {0600, 0640, 0444, 0755}) {
        std::string p = dir_.file("out.csv");
        bpt::write_file(p, "old\n");
        ASSERT_EQ(0, chmod(p.c_str(), mode));
        ASSERT_EQ(BP_OK, replace(p, "new\n")) << bp_last_error();
        struct stat sb;
        ASSERT_EQ(0, stat(p.c_str(), &sb));
        EXPECT_EQ(mode, sb.st_mode & 07777) << std::oct << mode;
        EXPECT_EQ("new\n", read_all(p));
        unlink(p.c_str());
    }
}

TEST_F(AtomicFile, ANewFileHasTheUmasksMode) {
    mode_t old = umask(027);
    std::string p = dir_.file("fresh.csv");
    ASSERT_EQ(BP_OK, replace(p, "x"));
    umask(old);
    struct stat sb;
    ASSERT_EQ(0, stat(p.c_str(), &sb));
    EXPECT_EQ(0640u, sb.st_mode & 07777);
}

// Only root can give a file to another user; elsewhere the refusal is what is checked.
TEST_F(AtomicFile, AReplacedFileKeepsItsOwnerAndGroup) {
    std::string p = dir_.file("owned.ckpt");
    bpt::write_file(p, "old");
    uid_t uid = 65534; // nobody
    gid_t gid = 65534;
    if (geteuid() != 0) {
        struct stat sb;
        ASSERT_EQ(0, stat(p.c_str(), &sb));
        EXPECT_EQ(BP_OK, replace(p, "new")); // our own file: nothing to change
        EXPECT_EQ(sb.st_uid, geteuid());
        GTEST_SKIP() << "giving a file to another user needs root";
    }
    ASSERT_EQ(0, chown(p.c_str(), uid, gid));
    ASSERT_EQ(0, chmod(p.c_str(), 0600));
    ASSERT_EQ(BP_OK, replace(p, "new")) << bp_last_error();
    struct stat sb;
    ASSERT_EQ(0, stat(p.c_str(), &sb));
    EXPECT_EQ(uid, sb.st_uid);
    EXPECT_EQ(gid, sb.st_gid);
    EXPECT_EQ(0600u, sb.st_mode & 07777);
    EXPECT_EQ("new", read_all(p));
}

TEST_F(AtomicFile, ASymlinkIsWrittenThroughAndStaysALink) {
    ASSERT_EQ(0, mkdir(dir_.file("real").c_str(), 0755));
    std::string target = dir_.file("real/model.ckpt");
    bpt::write_file(target, "old");
    ASSERT_EQ(0, chmod(target.c_str(), 0600));
    std::string link = dir_.file("link.ckpt");
    std::string chain = dir_.file("chain.ckpt");
    ASSERT_EQ(0, symlink("real/model.ckpt", link.c_str())); // relative to the link's folder
    ASSERT_EQ(0, symlink(link.c_str(), chain.c_str()));     // absolute, to another link
    for (const std::string &name : {link, chain}) {
        ASSERT_EQ(BP_OK, replace(name, "new " + name)) << bp_last_error();
        EXPECT_TRUE(is_link(link));
        EXPECT_TRUE(is_link(chain));
        EXPECT_EQ("new " + name, read_all(target));
        struct stat sb;
        ASSERT_EQ(0, stat(target.c_str(), &sb));
        EXPECT_EQ(0600u, sb.st_mode & 07777);
    }
    EXPECT_EQ((std::set<std::string>{"model.ckpt"}), entries(dir_.file("real")));
    EXPECT_EQ((std::set<std::string>{"real", "link.ckpt", "chain.ckpt"}), entries(dir_.path()));
}

TEST_F(AtomicFile, ADanglingSymlinkCreatesItsTarget) {
    ASSERT_EQ(0, mkdir(dir_.file("real").c_str(), 0755));
    std::string link = dir_.file("link.csv");
    ASSERT_EQ(0, symlink("real/new.csv", link.c_str()));
    ASSERT_EQ(BP_OK, replace(link, "made")) << bp_last_error();
    EXPECT_TRUE(is_link(link));
    EXPECT_EQ("made", read_all(dir_.file("real/new.csv")));
}

TEST_F(AtomicFile, ALinkLoopIsRefused) {
    std::string a = dir_.file("a"), b = dir_.file("b");
    ASSERT_EQ(0, symlink(b.c_str(), a.c_str()));
    ASSERT_EQ(0, symlink(a.c_str(), b.c_str()));
    std::string msg;
    EXPECT_EQ(BP_ERR_IO, replace(a, "x", &msg));
    EXPECT_NE(std::string::npos, msg.find(strerror(ELOOP))) << msg;
    EXPECT_EQ((std::set<std::string>{"a", "b"}), entries(dir_.path()));
}

// /dev/stdout as root was renamed over: the link in /dev replaced, the output lost.
TEST_F(AtomicFile, AProcLinkIsRefused) {
    std::string f = dir_.file("redirected");
    bpt::write_file(f, "keep");
    int fd = open(f.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    std::string self = "/proc/self/fd/" + std::to_string(fd);
    std::string via = dir_.file("stdout-like");
    ASSERT_EQ(0, symlink(self.c_str(), via.c_str()));
    for (const std::string &p : {self, via}) {
        std::string msg;
        EXPECT_EQ(BP_ERR_IO, replace(p, "x", &msg)) << p;
        EXPECT_NE(std::string::npos, msg.find("a /proc link")) << msg;
    }
    close(fd);
    EXPECT_EQ("keep", read_all(f));
    EXPECT_TRUE(is_link(via));
    EXPECT_EQ((std::set<std::string>{"redirected", "stdout-like"}), entries(dir_.path()));
}

TEST_F(AtomicFile, WhatIsNotARegularFileIsRefusedByKind) {
    std::string fifo = dir_.file("fifo"), sock = dir_.file("sock"), sub = dir_.file("sub");
    std::string devlink = dir_.file("null-link");
    ASSERT_EQ(0, mkfifo(fifo.c_str(), 0644));
    ASSERT_EQ(0, mkdir(sub.c_str(), 0755));
    ASSERT_EQ(0, symlink("/dev/null", devlink.c_str()));
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(s, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(sock.size(), sizeof addr.sun_path);
    memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
    ASSERT_EQ(0, bind(s, reinterpret_cast<sockaddr *>(&addr), sizeof addr));
    struct {
        std::string path, says;
    } cases[] = {{fifo, "a pipe (FIFO)"},
                 {sock, "a socket"},
                 {sub, "a folder"},
                 {"/dev/null", "a device"},
                 {devlink, "a device"}};
    auto before = entries(dir_.path());
    for (const auto &c : cases) {
        std::string msg;
        EXPECT_EQ(BP_ERR_IO, replace(c.path, "x", &msg)) << c.path;
        EXPECT_NE(std::string::npos, msg.find(c.says)) << msg;
        EXPECT_NE(std::string::npos, msg.find("not a regular file")) << msg;
    }
    close(s);
    EXPECT_EQ(before, entries(dir_.path()));
    EXPECT_TRUE(is_link(devlink));
    struct stat sb;
    ASSERT_EQ(0, stat("/dev/null", &sb));
    EXPECT_TRUE(S_ISCHR(sb.st_mode));
}

TEST_F(AtomicFile, TargetFollowsLinks) {
    ASSERT_EQ(0, mkdir(dir_.file("d").c_str(), 0755));
    std::string link = dir_.file("d/l");
    ASSERT_EQ(0, symlink("../t", link.c_str()));
    char *t = nullptr;
    ASSERT_EQ(BP_OK, bp_atomic_target(link.c_str(), &t));
    EXPECT_EQ(dir_.file("d/../t"), std::string(t));
    free(t);
    ASSERT_EQ(BP_OK, bp_atomic_target("plain", &t));
    EXPECT_STREQ("plain", t);
    free(t);
}

// ---- backprop/file.h: the public handle ----

TEST(BpFile, NullArgumentsAreRefusedByName) {
    bp_status st = BP_OK;
    EXPECT_EQ(nullptr, bp_file_open(nullptr, &st));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    EXPECT_NE(nullptr, strstr(bp_last_error(), "bp_file_open: path is NULL")) << bp_last_error();
    EXPECT_EQ(nullptr, bp_file_open(nullptr, nullptr));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_file_commit(nullptr));
    EXPECT_NE(nullptr, strstr(bp_last_error(), "bp_file_commit")) << bp_last_error();
    EXPECT_EQ(nullptr, bp_file_stream(nullptr));
    bp_file_abort(nullptr);
    st = BP_OK;
    EXPECT_EQ(nullptr, bp_file_target(nullptr, &st));
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, st);
    EXPECT_EQ(nullptr, bp_file_temp_name(nullptr));
}

TEST_F(AtomicFile, TheHandleReplacesTheTargetOnlyAtCommit) {
    std::string p = dir_.file("metrics.csv");
    bpt::write_file(p, "old\n");
    bp_status st = BP_ERR_IO;
    bp_file *f = bp_file_open(p.c_str(), &st);
    ASSERT_NE(nullptr, f) << bp_last_error();
    EXPECT_EQ(BP_OK, st);
    fputs("new\n", bp_file_stream(f));
    fflush(bp_file_stream(f));
    EXPECT_EQ("old\n", read_all(p));
    ASSERT_EQ(BP_OK, bp_file_commit(f)) << bp_last_error();
    EXPECT_EQ("new\n", read_all(p));
    EXPECT_EQ(std::set<std::string>{"metrics.csv"}, entries(dir_.path()));
}

TEST_F(AtomicFile, TheHandleAbortedLeavesTheTargetAndNoTemporary) {
    std::string p = dir_.file("metrics.csv");
    bpt::write_file(p, "old\n");
    bp_file *f = bp_file_open(p.c_str(), nullptr);
    ASSERT_NE(nullptr, f) << bp_last_error();
    fputs("half", bp_file_stream(f));
    bp_file_abort(f);
    EXPECT_EQ("old\n", read_all(p));
    EXPECT_EQ(std::set<std::string>{"metrics.csv"}, entries(dir_.path()));
}

TEST_F(AtomicFile, TheHandleRefusesAFolderAndNamesIt) {
    bp_status st = BP_OK;
    EXPECT_EQ(nullptr, bp_file_open(dir_.path().c_str(), &st));
    EXPECT_EQ(BP_ERR_IO, st);
    EXPECT_NE(nullptr, strstr(bp_last_error(), "a folder")) << bp_last_error();
    EXPECT_STREQ("a folder", bp_file_kind(S_IFDIR | 0755));
    char *tmp = bp_file_temp_name("/x/out.csv");
    ASSERT_NE(nullptr, tmp);
    EXPECT_EQ(0, strncmp(tmp, "/x/out.csv.tmp.", 15)) << tmp;
    free(tmp);
}

// ---- bp_file_check: an output checked before work starts ----

// The status of bp_file_check(path) and its message.
bp_status check(const std::string &path, std::string *msg) {
    bp_status st = bp_file_check(path.c_str());
    *msg = st == BP_OK ? "" : bp_last_error();
    return st;
}

bool has(const std::string &msg, const std::string &part) {
    return msg.find(part) != std::string::npos;
}

TEST(BpFileCheck, NullAndEmptyAreRefusedByName) {
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_file_check(nullptr));
    EXPECT_NE(nullptr, strstr(bp_last_error(), "bp_file_check: path is NULL")) << bp_last_error();
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, bp_file_check(""));
    EXPECT_NE(nullptr, strstr(bp_last_error(), "bp_file_check: the path is empty"))
        << bp_last_error();
}

TEST_F(AtomicFile, CheckPassesAWritablePathAndLeavesNothing) {
    std::string msg, old = dir_.file("old.csv");
    bpt::write_file(old, "keep");
    EXPECT_EQ(BP_OK, check(dir_.file("new.csv"), &msg)) << msg;
    EXPECT_EQ(BP_OK, check(old, &msg)) << msg;
    EXPECT_EQ("keep", read_all(old));
    EXPECT_EQ(std::set<std::string>{"old.csv"}, entries(dir_.path()));
}

TEST_F(AtomicFile, CheckRefusesWhatCannotNameAnOutput) {
    std::string sub = dir_.file("sub"), fifo = dir_.file("fifo"), msg;
    ASSERT_EQ(0, mkdir(sub.c_str(), 0755));
    ASSERT_EQ(0, mkfifo(fifo.c_str(), 0644));
    for (const std::string &p : {sub, sub + "/", sub + "/.", sub + "/.."}) {
        EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, check(p, &msg)) << p;
        EXPECT_TRUE(has(msg, "'" + p + "' is a folder; give a file name")) << msg;
    }
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, check("/dev/null", &msg));
    EXPECT_TRUE(has(msg, "'/dev/null' is a device, not a regular file")) << msg;
    EXPECT_EQ(BP_ERR_INVALID_ARGUMENT, check(fifo, &msg));
    EXPECT_TRUE(has(msg, "is a pipe (FIFO), not a regular file")) << msg;
    EXPECT_EQ((std::set<std::string>{"fifo", "sub"}), entries(dir_.path()));
}

TEST_F(AtomicFile, CheckNamesAFolderThatIsNotThere) {
    std::string file = dir_.file("file"), msg;
    bpt::write_file(file, "x");
    EXPECT_EQ(BP_ERR_IO, check(dir_.file("none/deeper/out.csv"), &msg));
    EXPECT_TRUE(has(msg, "folder '" + dir_.file("none/deeper") + "' does not exist")) << msg;
    EXPECT_EQ(BP_ERR_IO, check(file + "/out.csv", &msg));
    EXPECT_TRUE(has(msg, "folder '" + file + "' is not a folder")) << msg;
    EXPECT_EQ(std::set<std::string>{"file"}, entries(dir_.path()));
}

TEST(BpFileCheck, ProcTakesNoFile) {
    std::string msg;
    EXPECT_EQ(BP_ERR_IO, check("/proc/out.csv", &msg));
    EXPECT_TRUE(has(msg, "cannot write '/proc/out.csv': cannot create a file in folder '/proc'"))
        << msg;
}

TEST_F(AtomicFile, CheckRefusesAReadOnlyFolder) {
    std::string msg, ro = dir_.file("ro");
    ASSERT_EQ(0, mkdir(ro.c_str(), 0555));
    if (access(ro.c_str(), W_OK) == 0) {
        chmod(ro.c_str(), 0755);
        GTEST_SKIP() << "a read-only folder is writable to root";
    }
    EXPECT_EQ(BP_ERR_IO, check(ro + "/out.csv", &msg));
    EXPECT_TRUE(has(msg, "cannot create a file in folder '" + ro + "': " + strerror(EACCES)))
        << msg;
    chmod(ro.c_str(), 0755);
    EXPECT_TRUE(entries(ro).empty());
}

TEST_F(AtomicFile, CheckFollowsLinksToTheFolderWritten) {
    std::string sub = dir_.file("sub"), msg;
    ASSERT_EQ(0, mkdir(sub.c_str(), 0755));
    std::string to_sub = dir_.file("to-sub"), dangling = dir_.file("dangling");
    ASSERT_EQ(0, symlink("sub/out.csv", to_sub.c_str()));
    ASSERT_EQ(0, symlink("none/out.csv", dangling.c_str()));
    EXPECT_EQ(BP_OK, check(to_sub, &msg)) << msg;
    EXPECT_TRUE(entries(sub).empty());
    EXPECT_EQ(BP_ERR_IO, check(dangling, &msg));
    EXPECT_TRUE(has(msg, "folder '" + dir_.file("none") + "' does not exist")) << msg;
    bpt::write_file(dir_.file("open"), "x");
    int fd = open(dir_.file("open").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    std::string self = "/proc/self/fd/" + std::to_string(fd);
    EXPECT_EQ(BP_ERR_IO, check(self, &msg));
    EXPECT_TRUE(has(msg, "a /proc link")) << msg;
    close(fd);
    EXPECT_TRUE(is_link(to_sub) && is_link(dangling));
}

TEST_F(AtomicFile, CheckRefusesANameTooLongForItsSuffix) {
    std::string name(250, 'n'), msg; // fits in 255 bytes, not with ".tmp.<pid>"
    EXPECT_EQ(BP_ERR_IO, check(dir_.file(name), &msg));
    EXPECT_TRUE(has(msg, "its name is 250 bytes")) << msg;
    EXPECT_TRUE(has(msg, "with the suffix '.tmp.")) << msg;
    EXPECT_TRUE(has(msg, "choose a shorter name")) << msg;
    EXPECT_TRUE(entries(dir_.path()).empty());
}

// ---- bp_file_same: two names of one file ----

// bp_file_same(a, b) and what it says of how they meet ("-" for no file in common).
std::string same(const std::string &a, const std::string &b) {
    const char *how = "unset";
    int r = bp_file_same(a.c_str(), b.c_str(), &how);
    return r ? std::string(how) : "-";
}

TEST(BpFileSame, NullIsNoFile) {
    const char *how = "unset";
    EXPECT_EQ(0, bp_file_same(nullptr, "/", &how));
    EXPECT_STREQ("", how);
    EXPECT_EQ(0, bp_file_same("/", nullptr, nullptr));
    EXPECT_EQ(1, bp_file_same("/", "/", nullptr));
}

TEST_F(AtomicFile, SameFindsOneFileThroughLinksAndOtherPaths) {
    ASSERT_EQ(0, mkdir(dir_.file("sub").c_str(), 0755));
    std::string f = dir_.file("sub/data.csv"), other = dir_.file("other.csv");
    bpt::write_file(f, "x\n");
    bpt::write_file(other, "x\n");
    ASSERT_EQ(0, symlink("sub/data.csv", dir_.file("soft.csv").c_str()));
    ASSERT_EQ(0, link(f.c_str(), dir_.file("hard.csv").c_str()));
    EXPECT_EQ("", same(f, f));
    EXPECT_EQ("through a link", same(dir_.file("soft.csv"), f));
    EXPECT_EQ("through a link", same(f, dir_.file("soft.csv")));
    EXPECT_EQ("through a link", same(dir_.file("hard.csv"), f));
    EXPECT_EQ("by another path", same(dir_.file("sub/../sub/data.csv"), f));
    EXPECT_EQ("-", same(other, f)); // the same bytes are another file
    EXPECT_EQ("-", same(dir_.file("sub"), f));
}

TEST_F(AtomicFile, SameTellsFilesNotThereYetByTheirResolvedFolder) {
    ASSERT_EQ(0, mkdir(dir_.file("sub").c_str(), 0755));
    ASSERT_EQ(0, symlink("sub", dir_.file("to-sub").c_str()));
    std::string a = dir_.file("sub/new.st");
    EXPECT_EQ("", same(a, a));
    EXPECT_EQ("by another path", same(dir_.file("to-sub/new.st"), a));
    EXPECT_EQ("by another path", same(dir_.file("sub/./new.st"), a));
    EXPECT_EQ("-", same(dir_.file("sub/other.st"), a));
    EXPECT_EQ("-", same(dir_.file("none/new.st"), dir_.file("none/new.st"))) // no such folder
        << "a folder that cannot be resolved proves nothing";
    bpt::write_file(dir_.file("sub/there.st"), "x");
    EXPECT_EQ("-", same(a, dir_.file("sub/there.st"))); // one there, one not
    EXPECT_TRUE(entries(dir_.file("sub")) == std::set<std::string>{"there.st"});
}

} // namespace
