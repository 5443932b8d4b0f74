// Helpers for tests that write files and run PyTorch scripts: a temporary folder, raw writes,
// the interpreter that has torch and safetensors, and exit codes of commands.
#pragma once

#include <string>
#include <vector>

namespace bpt {

// A fresh folder under the system's temporary directory, removed with everything in it.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const {
        return path_;
    }
    std::string file(const std::string &name) const {
        return path_ + "/" + name;
    }

  private:
    std::string path_;
};

// Writes the bytes of v to path (a test failure when it cannot).
void write_raw(const std::string &path, const void *data, size_t bytes);
template <class T> void write_raw(const std::string &path, const std::vector<T> &v) {
    write_raw(path, v.data(), v.size() * sizeof(T));
}
inline void write_file(const std::string &path, const std::string &bytes) {
    write_raw(path, bytes.data(), bytes.size());
}

// The python that has torch and safetensors: $BP_TORCH_PYTHON when set (e.g. a GPU machine's
// own python3), else the venv scripts/python-env.sh makes. "" and *why when there is none.
std::string torch_python(std::string *why);

// The exit status of a shell command (-1 when it did not exit normally).
int run_exit_code(const std::string &cmd);

} // namespace bpt
