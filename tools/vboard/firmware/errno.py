# Virtual board firmware: `errno` with the ESP32 port's numbers (newlib's, which
# lwIP and the port raise), not the host's or the WebAssembly libc's.
EPERM = 1
ENOENT = 2
EIO = 5
EBADF = 9
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EEXIST = 17
ENODEV = 19
ENOTDIR = 20
EISDIR = 21
EINVAL = 22
ENOSPC = 28
EROFS = 30
ENOTEMPTY = 90
ENAMETOOLONG = 91
EOPNOTSUPP = 95
ECONNRESET = 104
ENOBUFS = 105
EAFNOSUPPORT = 106
EADDRINUSE = 112
ECONNABORTED = 113
ETIMEDOUT = 116
EHOSTUNREACH = 118
EINPROGRESS = 119
EALREADY = 120
ENOTCONN = 128
ECONNREFUSED = 111

errorcode = {v: k for k, v in globals().items() if k[0] == "E"}
