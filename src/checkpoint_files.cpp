// Durable writes for checkpoints: write, fsync, rename, fsync the directory.
#include "kvcache/checkpoint/files.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

// Every byte of `bytes`, at the file's position or (at >= 0) at offset `at`.
void write_fd(int fd, const std::filesystem::path& path, std::span<const std::byte> bytes,
              std::int64_t at = -1) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = at < 0 ? ::write(fd, bytes.data() + done, bytes.size() - done)
                             : ::pwrite(fd, bytes.data() + done, bytes.size() - done,
                                        static_cast<off_t>(at + static_cast<std::int64_t>(done)));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write to", path);
    }
    done += static_cast<std::size_t>(n);
  }
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
  void write_all(std::span<const std::byte> bytes) { write_fd(fd_, path_, bytes); }
  // The whole file: sized once, read in place (a file that grows while it
  // is read is read on to its end).
  std::vector<std::byte> read_all() {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail("fstat of", path_);
    std::vector<std::byte> bytes(static_cast<std::size_t>(std::max<off_t>(st.st_size, 0)) + 1);
    std::size_t done = 0;
    while (true) {
      if (done == bytes.size()) bytes.resize(bytes.size() * 2);
      const ssize_t n = ::read(fd_, bytes.data() + done, bytes.size() - done);
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("read of", path_);
      }
      done += static_cast<std::size_t>(n);
    }
    bytes.resize(done);
    return bytes;
  }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
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

MappedFile::MappedFile(const std::filesystem::path& path) {
  File f(path, O_RDONLY);
  const int fd = f.release();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    (void)::close(fd);
    fail("fstat of", path);
  }
  size_ = static_cast<std::size_t>(std::max<off_t>(st.st_size, 0));
  if (size_ != 0) {
    void* at = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (at == MAP_FAILED) {
      (void)::close(fd);
      fail("mmap of", path);
    }
    data_ = static_cast<const std::byte*>(at);
  }
  (void)::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) (void)::munmap(const_cast<std::byte*>(data_), size_);
}

AtomicFile::AtomicFile(std::filesystem::path path)
    : path_(std::move(path)), temporary_(path_.string() + ".tmp") {
  File f(temporary_, O_WRONLY | O_CREAT | O_TRUNC);
  fd_ = f.release();
}

AtomicFile::~AtomicFile() {
  if (fd_ < 0) return;
  (void)::close(fd_);
  (void)::unlink(temporary_.c_str());
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  write_fd(fd_, temporary_, bytes);
}

void AtomicFile::write_at(std::uint64_t offset, std::span<const std::byte> bytes) {
  write_fd(fd_, temporary_, bytes, static_cast<std::int64_t>(offset));
}

void AtomicFile::commit() {
  if (fd_ < 0) {
    detail::raise<InvalidArgument>("checkpoint: {} was already committed", path_.string());
  }
  if (::fsync(fd_) != 0) fail("fsync of", temporary_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    (void)::unlink(temporary_.c_str());
    fail("close of", temporary_);
  }
  if (::rename(temporary_.c_str(), path_.c_str()) != 0) {
    (void)::unlink(temporary_.c_str());
    fail("rename onto", path_);
  }
  sync_directory(path_);
}

void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  AtomicFile file(path);
  file.write(bytes);
  file.commit();
}

void append_durable(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  File f(path, O_WRONLY | O_APPEND);
  f.write_all(bytes);
  f.sync();
  f.close();
}

}  // namespace kvcache::checkpoint
