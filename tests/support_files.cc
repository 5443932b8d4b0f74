#include "support_files.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace bpt {

TempDir::TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bp_test_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data())) path_ = buf.data();
    EXPECT_FALSE(path_.empty()) << "mkdtemp failed for " << tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

void write_raw(const std::string &path, const void *data, size_t bytes) {
    FILE *f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr) << "cannot write " << path;
    size_t n = bytes ? std::fwrite(data, 1, bytes, f) : 0;
    EXPECT_EQ(0, std::fclose(f)) << path;
    EXPECT_EQ(n, bytes) << path;
}

std::string torch_python(std::string *why) {
    const char *env = std::getenv("BP_TORCH_PYTHON");
    std::string py = env && *env ? env : BP_SOURCE_DIR "/.venv-torch/bin/python";
    const char *fix = env && *env ? "unset BP_TORCH_PYTHON or point it at such a python"
                                  : "create it with: bash scripts/python-env.sh";
    if (access(py.c_str(), X_OK) != 0) {
        *why = py + " is absent; " + fix;
        return "";
    }
    std::string probe = "'" + py + "' -c 'import torch, safetensors.torch' >/dev/null 2>&1";
    if (std::system(probe.c_str()) != 0) {
        *why = py + " cannot import torch and safetensors; " + fix;
        return "";
    }
    return py;
}

int run_exit_code(const std::string &cmd) {
    int rc = std::system(cmd.c_str());
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

} // namespace bpt
