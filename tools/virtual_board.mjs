// A virtual MicroPython board on a serial line, for testing the installer.
//
// usage: node tools/virtual_board.mjs [--fd N] [--flash DIR] [--flash-size BYTES]
//                                     [--run-main] [--trace]
//
// The serial line is file descriptor N (default 3), normally the master side
// of a pty whose slave (/dev/pts/K) the tools under test open like a USB
// serial port; tests/support/virtual_board.py creates the pty and starts this
// script. Behind the line runs the real MicroPython (the WebAssembly port
// from npm, the same interpreter tools/mpy_run.mjs uses) with its real
// event-driven REPL (shared/runtime/pyexec.c): friendly REPL, Ctrl-A raw
// REPL, Ctrl-B back, Ctrl-C, Ctrl-D to execute or soft-reset. Added here,
// because the WebAssembly port cannot do them itself:
//
// - raw-paste mode (Ctrl-E 'A' Ctrl-A, answered "R\x01", window 128 bytes,
//   flow control with \x01, end \x04): the port's stdin is a stub, so the
//   pasted code is collected here and then handed to the REPL as a normal
//   raw-REPL command, with its "OK" dropped, as a real board would answer;
// - soft reset: "MPY: soft reboot", a fresh interpreter with the same
//   filesystem, boot.py, then main.py (friendly REPL and --run-main only:
//   code cannot be interrupted here, and an agent's main loop never returns)
//   and the banner, or straight back to the raw REPL when it was in raw mode;
// - "\n" from print() goes out as "\r\n", as a board's UART driver sends it.
//
// Ctrl-C cannot interrupt running code (the interpreter runs synchronously
// on this thread); it only clears the line, as it does at a prompt.
//
// The board's filesystem is a directory in memory, mounted at / through a
// small Python VFS so that it behaves like a board's flash: errors carry
// MicroPython's errno numbers (ENOENT 2, EEXIST 17, ... where the port's
// libc would say 44, 20, ...), the port's own directories are hidden, and
// os.statvfs() reports a flash of --flash-size bytes (default 2 MiB, as the
// filesystem partition of a 4 MB ESP32; reported, not enforced).
// --flash DIR loads DIR into it at start and writes it back (DIR replaced)
// when the board stops, for inspection.
// Prints "ready" on stdout when the REPL is up and "stopped" when it ends
// (SIGTERM, SIGINT, or the line closing). Diagnostics go to stderr.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import tty from "node:tty";

const FORCED_EXIT = 0x100; // PYEXEC_FORCED_EXIT: soft reset requested
const WINDOW = 128; // raw-paste window: half of MICROPY_REPL_STDIN_BUFFER_MAX
const RAW_PROMPT = "raw REPL; CTRL-B to exit\r\n";
const FLASH = "/flash"; // where the board's files live in the port's memory filesystem

// Mounted at / in every fresh interpreter. Runs inside a function so the
// REPL's globals stay as clean as a real board's.
const SETUP = `
def _mm_setup(size):
    import os, vfs
    # WASI errno numbers (the port's libc) -> MicroPython's, as boards raise them.
    errnos = {63: 1, 44: 2, 29: 5, 8: 9, 6: 11, 48: 12, 2: 13, 10: 16, 20: 17, 75: 18,
              43: 19, 54: 20, 31: 21, 28: 22, 33: 24, 22: 27, 51: 28, 70: 29, 69: 30,
              37: 36, 55: 39, 58: 95}
    disk = vfs.VfsPosix('${FLASH}')

    def call(fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise OSError(errnos.get(e.errno, e.errno))

    class Flash:
        def __init__(self):
            self.cwd = '/'

        def _abs(self, path):
            if not path.startswith('/'):
                path = self.cwd + path
            parts = []
            for part in path.split('/'):
                if part == '..':
                    if parts:
                        parts.pop()
                elif part and part != '.':
                    parts.append(part)
            return '/' + '/'.join(parts)

        def mount(self, readonly, mkfs):
            pass

        def umount(self):
            pass

        def chdir(self, path):
            path = self._abs(path)
            if not call(disk.stat, path)[0] & 0x4000:
                raise OSError(20)
            self.cwd = path if path == '/' else path + '/'

        def getcwd(self):
            return self.cwd if self.cwd == '/' else self.cwd[:-1]

        def stat(self, path):
            return call(disk.stat, self._abs(path))

        def ilistdir(self, path):
            # (name, type, inode, size) as littlefs on a board lists them
            path = self._abs(path)
            entries = call(lambda p: list(disk.ilistdir(p)), path)
            out = []
            for e in entries:
                size = 0 if e[1] & 0x4000 else disk.stat(path.rstrip('/') + '/' + e[0])[6]
                out.append((e[0], e[1], 0, size))
            return iter(out)

        def mkdir(self, path):
            call(disk.mkdir, self._abs(path))

        def rmdir(self, path):
            call(disk.rmdir, self._abs(path))

        def remove(self, path):
            call(disk.remove, self._abs(path))

        def rename(self, old, new):
            call(disk.rename, self._abs(old), self._abs(new))

        def open(self, path, mode):
            path = self._abs(path)
            try:
                is_dir = disk.stat(path)[0] & 0x4000
            except OSError:
                is_dir = False
            if is_dir:
                raise OSError(21)
            return call(disk.open, path, mode)

        def _used(self, path):
            total = 4096
            for entry in disk.ilistdir(path):
                child = path.rstrip('/') + '/' + entry[0]
                if entry[1] & 0x4000:
                    total += self._used(child)
                else:
                    total += (disk.stat(child)[6] + 4095) // 4096 * 4096
            return total

        def statvfs(self, path):
            blocks = size // 4096
            free = max(0, blocks - self._used('/') // 4096)
            return (4096, 4096, blocks, free, free, 0, 0, 0, 0, 255)

    os.umount('/')
    os.mount(Flash(), '/')
    os.chdir('/')

_mm_setup(%SIZE%)
del _mm_setup
`;

const opts = { fd: 3, flash: null, flashSize: 2 * 1024 * 1024, runMain: false, trace: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--fd") opts.fd = Number(argv[++i]);
  else if (a === "--flash") opts.flash = argv[++i];
  else if (a === "--flash-size") opts.flashSize = Number(argv[++i]);
  else if (a === "--run-main") opts.runMain = true;
  else if (a === "--trace") opts.trace = true;
  else {
    console.error("usage: node tools/virtual_board.mjs [--fd N] [--flash DIR] " +
      "[--flash-size BYTES] [--run-main] [--trace]");
    process.exit(2);
  }
}
if (!Number.isInteger(opts.flashSize) || opts.flashSize < 4096) {
  console.error("virtual_board: --flash-size needs a byte count >= 4096");
  process.exit(2);
}
if (!Number.isInteger(opts.fd) || opts.fd < 0) {
  console.error("virtual_board: --fd needs a file descriptor number");
  process.exit(2);
}

const line = opts.fd;
let mp = null;
let raw = false; // mirror of pyexec_mode_kind: raw REPL or friendly
let rawLen = 0; // bytes in the raw REPL's line buffer, and its first two
let rawHead = [];
let paste = null; // { code: [], remain } while receiving a raw paste
let muted = false;
let dropOk = 0; // bytes of an "OK" to drop (raw paste answers without it)
let lastOut = 0;
let out = [];

function trace(dir, bytes) {
  if (opts.trace) console.error(dir, JSON.stringify(Buffer.from(bytes).toString("latin1")));
}

// Output from the interpreter: cooked like a UART console.
function fromPython(bytes) {
  for (const b of bytes) {
    if (muted) continue;
    if (dropOk > 0) {
      dropOk--;
      continue;
    }
    if (b === 0x0a && lastOut !== 0x0d) out.push(0x0d);
    out.push(b);
    lastOut = b;
  }
}

function send(bytes) {
  for (const b of bytes) out.push(b);
}

function flush() {
  if (out.length === 0) return;
  const buf = Buffer.from(out);
  out = [];
  trace("tx", buf);
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(line, buf, off);
    } catch (err) {
      if (err.code === "EAGAIN") continue; // the tty stream made the line non-blocking
      throw err;
    }
  }
}

async function boot(files) {
  mp = await loadMicroPython({
    linebuffer: false,
    stdout: fromPython,
    stderr: fromPython,
  });
  mkdirs(FLASH);
  for (const dir of files.dirs) mkdirs(FLASH + dir);
  for (const [p, data] of files.files) mp.FS.writeFile(FLASH + p, data);
  mp.runPython(SETUP.replace("%SIZE%", String(opts.flashSize)));
}

function mkdirs(p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch { /* exists */ }
  }
}

function snapshot() {
  const files = [];
  const dirs = [];
  const walk = (dir) => {
    for (const name of mp.FS.readdir(FLASH + dir)) {
      if (name === "." || name === "..") continue;
      const p = dir + "/" + name;
      const st = mp.FS.stat(FLASH + p);
      if (mp.FS.isDir(st.mode)) {
        dirs.push(p);
        walk(p);
      } else if (mp.FS.isFile(st.mode)) {
        files.push([p, mp.FS.readFile(FLASH + p)]);
      }
    }
  };
  walk("");
  return { dirs, files };
}

function loadHostDir(dir) {
  const files = [];
  const dirs = [];
  if (!dir || !fs.existsSync(dir)) return { dirs, files };
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel + "/" + e.name;
      if (e.isDirectory()) {
        dirs.push(r);
        walk(r);
      } else if (e.isFile()) {
        files.push([r, fs.readFileSync(path.join(dir, r))]);
      }
    }
  };
  walk("");
  return { dirs, files };
}

function saveHostDir(dir) {
  if (!dir || !mp) return;
  const snap = snapshot();
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const d of snap.dirs) fs.mkdirSync(path.join(dir, d), { recursive: true });
  for (const [p, data] of snap.files) fs.writeFileSync(path.join(dir, p), data);
}

function runFile(name) {
  // As a board runs boot.py/main.py: in __main__, traceback printed, not fatal.
  if (!mp.FS.analyzePath(FLASH + "/" + name).exists) return;
  mp.runPython(
    "import sys\n" +
    "try:\n" +
    "    exec(open('" + name + "').read(), globals())\n" +
    "except BaseException as _e:\n" +
    "    sys.print_exception(_e)\n",
  );
}

async function softReset() {
  const wasRaw = raw;
  send(Buffer.from("MPY: soft reboot\r\n"));
  flush();
  const files = snapshot();
  await boot(files);
  lastOut = 0;
  runFile("boot.py");
  if (wasRaw) {
    muted = true;
    mp.replInit();
    mp.replProcessChar(0x01);
    muted = false;
    send(Buffer.from(RAW_PROMPT + ">"));
  } else {
    if (opts.runMain) runFile("main.py");
    mp.replInit();
  }
  raw = wasRaw;
  rawLen = 0;
  rawHead = [];
  flush();
}

// Hand one byte to the interpreter's REPL; true when it asked for a soft reset.
function toRepl(c) {
  const before = out.length;
  const ret = mp.replProcessChar(c);
  if (!raw && c === 0x01) {
    const said = Buffer.from(out.slice(before)).toString("latin1");
    if (said.includes(RAW_PROMPT)) raw = true;
  }
  return (ret & FORCED_EXIT) !== 0;
}

function pasteByte(c) {
  if (c === 0x04 || c === 0x03) {
    send([0x04]); // end of data acknowledged (Ctrl-C too: the host stops sending)
    const code = paste.code;
    paste = null;
    if (c === 0x03) {
      send(Buffer.from("\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04>"));
      return false;
    }
    // Run it as a raw-REPL command; that REPL answers "OK" first, a raw
    // paste does not.
    dropOk = 2;
    for (const b of code) mp.replProcessChar(b);
    return toRepl(0x04);
  }
  paste.code.push(c);
  if (--paste.remain === 0) {
    send([0x01]); // another window free
    paste.remain = WINDOW;
  }
  return false;
}

function rawByte(c) {
  if (c === 0x01 && rawLen === 2 && rawHead[0] === 0x05 && rawHead[1] === 0x41) {
    mp.replProcessChar(0x03); // clear the REPL's line, which holds "\x05A"
    rawLen = 0;
    rawHead = [];
    send([0x52, 0x01, WINDOW & 0xff, WINDOW >> 8, 0x01]); // "R\x01", window, go
    paste = { code: [], remain: WINDOW };
    return false;
  }
  if (c === 0x01 || c === 0x03 || c === 0x04) {
    rawLen = 0;
    rawHead = [];
  } else if (c === 0x02) {
    raw = false;
  } else {
    if (rawLen < 2) rawHead.push(c);
    rawLen++;
  }
  return toRepl(c);
}

const queue = [];
let busy = false;
let stopping = false;

async function drain() {
  if (busy) return;
  busy = true;
  try {
    while (queue.length > 0 && !stopping) {
      const c = queue.shift();
      let reset;
      if (paste) reset = pasteByte(c);
      else if (raw) reset = rawByte(c);
      else reset = toRepl(c);
      if (reset) await softReset();
      if (queue.length === 0) flush();
    }
    flush();
  } finally {
    busy = false;
  }
}

function readLoop() {
  // A tty stream reads without blocking a libuv worker thread, so the
  // process can still exit while nothing arrives (a blocking fs.read would
  // hold exit until the next byte).
  const input = new tty.ReadStream(line);
  input.on("data", (chunk) => {
    trace("rx", chunk);
    for (const b of chunk) queue.push(b);
    drain().catch((e) => {
      console.error("virtual_board:", e);
      stop("internal error");
    });
  });
  input.on("error", (err) => stop("line closed (" + err.code + ")"));
  input.on("end", () => stop("line closed"));
}

function stop(why) {
  if (stopping) return;
  stopping = true;
  if (why) console.error("virtual_board: " + why);
  try {
    saveHostDir(opts.flash);
  } catch (err) {
    console.error("virtual_board: cannot save flash: " + err);
  }
  process.stdout.write("stopped\n");
  process.exit(0);
}

process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));

await boot(loadHostDir(opts.flash));
runFile("boot.py");
if (opts.runMain) runFile("main.py");
mp.replInit(); // power-on banner and ">>> ", as a board prints after reset
flush();
process.stdout.write("ready\n");
readLoop();
