// Durable writes for checkpoints: write, fsync, rename, fsync the directory.
#include "kvcache/checkpoint/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "kvcache/checkpoint/format.hpp"
#include "kvcache/error.hpp"

namespace kvcache::checkpoint {
namespace {

[[noreturn]] void fail(const char* what, const std::filesystem::path& path) {
  const int error = errno;
  detail::raise<CheckpointError>("checkpoint: {} {} failed: {}", what, path.string(),
                                 std::strerror(error));
}

class File {
 public:
  File(const std::filesystem::path& path, int flags) : path_(path) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("open", path);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd_ >= 0) (void)::close(fd_);
  }
  void write_all(std::span<const std::byte> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write to", path_);
      }
      done += static_cast<std::size_t>(n);
    }
  }
  std::vector<std::byte> read_all() {
    std::vector<std::byte> bytes;
    std::byte chunk[1 << 16];
    while (true) {
      const ssize_t n = ::read(fd_, chunk, sizeof(chunk));
      if (n == 0) return bytes;
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("read of", path_);
      }
      bytes.insert(bytes.end(), chunk, chunk + n);
    }
  }
  void sync() {
    if (::fsync(fd_) != 0) fail("fsync of", path_);
  }
  void close() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("close of", path_);
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

void sync_directory(const std::filesystem::path& file) {
  std::filesystem::path dir = file.parent_path();
  if (dir.empty()) dir = ".";
  File d(dir, O_RDONLY | O_DIRECTORY);
  d.sync();
}

}  // namespace

std::vector<std::byte> read_file(const std::filesystem::path& path) {
  File f(path, O_RDONLY);
  return f.read_all();
}

void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  std::filesystem::path temporary = path;
  temporary += ".tmp";
  {
    File f(temporary, O_WRONLY | O_CREAT | O_TRUNC);
    f.write_all(bytes);
    f.sync();
    f.close();
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) fail("rename onto", path);
  sync_directory(path);
}

void append_durable(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  File f(path, O_WRONLY | O_APPEND);
  f.write_all(bytes);
  f.sync();
  f.close();
}

}  // namespace kvcache::checkpoint
