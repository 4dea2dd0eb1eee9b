// The virtual board's CPU: a worker thread running the real MicroPython (the
// WebAssembly port from npm) with the board's REPL, firmware modules and flash.
// The hardware (tools/virtual_board.mjs, the main thread) starts one per reset
// and ends it at the next: a soft reset, machine.reset(), the watchdog or a
// power cut each give a fresh interpreter on the same flash.
//
// What this thread does:
// - the REPL on the console: friendly REPL, raw REPL, raw-paste mode (the port
//   cannot do that itself: the code is collected here and run as a raw-REPL
//   command), soft reset (Ctrl-D: handed to the hardware, which restarts the CPU);
// - boot.py, then main.py when the REPL is the friendly one, as a board boots;
// - the `_vboard` module the firmware modules (tools/vboard/firmware/*.py) call:
//   a request goes to the hardware thread and this thread blocks in
//   Atomics.wait until the answer, so blocking calls really block; sleeps
//   block here the same way; Ctrl-C on the console wakes either and the
//   interpreter raises KeyboardInterrupt;
// - the flash: the interpreter's files live in memory at /flash, and every
//   change is written through to the host directory at once (the durability a
//   board's flash gives). A power cut armed by the hardware tears one write:
//   half its bytes reach the flash, then this CPU stops for good.
import fs from "node:fs";
import path from "node:path";
import { parentPort, workerData } from "node:worker_threads";
import * as L from "./layout.mjs";

let memory = null;
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async (...args) => {
  const result = await instantiate(...args);
  memory = (result.instance || result).exports.memory;
  return result;
};
const { loadMicroPython } = await import("@micropython/micropython-webassembly-pyscript");

const W = workerData;
const ctl = new Int32Array(W.shared.ctl);
const clock = new Float64Array(W.shared.clock);
const ring = new Uint8Array(W.shared.ring);
const data = new Uint8Array(W.shared.data);
const cutSuffix = new Uint8Array(W.shared.cutSuffix);
const FLASH = "/flash";
const FW = "/fw";
const FORCED_EXIT = 0x100; // PYEXEC_FORCED_EXIT: soft reset requested
const WINDOW = 128; // raw-paste window: half of MICROPY_REPL_STDIN_BUFFER_MAX
const RAW_PROMPT = "raw REPL; CTRL-B to exit\r\n";
const EINTR = -4;
const O_CREAT = 0o100;
const O_TRUNC = 0o1000;
const O_APPEND = 0o2000;
const FIRMWARE = ["errno", "_vb", "machine", "socket", "tls", "ssl", "network", "ntptime"];
// Names the ESP32 firmware also answers to (u-prefixed extensible built-ins).
const ALIASES = { usocket: "socket", umachine: "machine", utime: "time" };

let mp = null;
let raw = false; // mirror of pyexec_mode_kind: raw REPL or friendly
let rawLen = 0; // bytes in the raw REPL's line buffer, and its first two
let rawHead = [];
let paste = null; // { code: [], remain } while receiving a raw paste
let muted = false;
let dropOk = 0; // bytes of an "OK" to drop (raw paste answers without it)
let lastOut = 0;
let out = [];
let text = "";

const heap = () => new Uint8Array(memory.buffer);
const post = (msg) => parentPort.postMessage(msg);
const log = (line) => post({ t: "log", line });

// -- console ------------------------------------------------------------------------

function fromPython(bytes) {
  // Output cooked like a UART console: "\n" goes out as "\r\n".
  for (const b of bytes) {
    if (muted) continue;
    if (dropOk > 0) {
      dropOk--;
      continue;
    }
    if (b === 0x0a && lastOut !== 0x0d) out.push(0x0d);
    out.push(b);
    lastOut = b;
    // A printing loop stays interruptible (not the REPL's own prompts and banner).
    if (b === 0x0a && Atomics.load(ctl, L.RUNNING)) checkInterrupt();
  }
  if (out.length >= 512) flush();
}

function send(bytes) {
  for (const b of typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes) out.push(b);
}

function flush() {
  if (out.length === 0) return;
  post({ t: "tx", b: Uint8Array.from(out) });
  out = [];
}

// Ctrl-C arrived while code ran: the interpreter raises KeyboardInterrupt at
// its next check, as after a board's UART interrupt.
function checkInterrupt() {
  if (Atomics.exchange(ctl, L.IRQ, 0) === 0) return false;
  mp._module._mp_sched_keyboard_interrupt();
  return true;
}

// -- requests to the hardware ---------------------------------------------------------

function request(op, s, a, b, c, addr, n, cap = 0) {
  flush();
  if (checkInterrupt()) return EINTR;
  Atomics.store(ctl, L.RPC, 0);
  const payload = n > 0 ? heap().slice(addr, addr + n) : null;
  post({ t: "rpc", op, s: String(s), a: a | 0, b: b | 0, c: c | 0, d: payload, n: cap });
  while (Atomics.load(ctl, L.RPC) === 0) Atomics.wait(ctl, L.RPC, 0);
  const status = Atomics.load(ctl, L.STATUS);
  const len = Atomics.load(ctl, L.LEN);
  const tl = Atomics.load(ctl, L.TEXT);
  text = tl ? Buffer.from(data.subarray(len, len + tl)).toString("utf8") : "";
  if (checkInterrupt()) return EINTR;
  return status;
}

const bridge = {
  rpc: (op, s, a, b, c, addr, n) => request(op, s, a, b, c, addr, n),
  rpcin(op, s, a, b, c, addr, cap) {
    const status = request(op, s, a, b, c, 0, 0, cap);
    if (status < 0) return status;
    const n = Math.min(Atomics.load(ctl, L.LEN), cap);
    if (n > 0) heap().set(data.subarray(0, n), addr);
    return n;
  },
  text: () => text,
  sleep(ms) {
    flush();
    if (ms > 0) Atomics.wait(ctl, L.IRQ, 0, ms); // Ctrl-C wakes it early
    checkInterrupt();
    return 0;
  },
  feed: () => post({ t: "feed" }),
  // The board's RTC: whole seconds since 2000-01-01 (the ESP32 port's epoch; an
  // int32 for Python, which a millisecond count of the Unix epoch is not) and
  // the milliseconds into the current second.
  secs: () => Math.floor((Date.now() + clock[L.RTC_SLOT]) / 1000) - 946684800,
  millis: () => Math.floor(Date.now() + clock[L.RTC_SLOT]) % 1000,
  cause: () => W.cause,
  heap: (n) => log("firmware modules and start-up use " + n + " bytes of the heap " +
    "(built into a real board's flash)"),
};

// -- the flash: memory filesystem written through to the host directory -----------

function mkdirs(p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try {
      mp.FS.mkdir(cur);
    } catch {
      /* exists */
    }
  }
}

function loadFlash(dir) {
  mkdirs(FLASH);
  fs.mkdirSync(dir, { recursive: true });
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel + "/" + e.name;
      if (e.isDirectory()) {
        mkdirs(FLASH + r);
        walk(r);
      } else if (e.isFile()) {
        mp.FS.writeFile(FLASH + r, fs.readFileSync(path.join(dir, r)));
      }
    }
  };
  walk("");
}

function hostPath(p) {
  if (typeof p !== "string") return null;
  if (p === FLASH) return W.flash;
  return p.startsWith(FLASH + "/") ? path.join(W.flash, p.slice(FLASH.length + 1)) : null;
}

function cutArmed(p) {
  if (Atomics.load(ctl, L.CUT) <= 0) return false;
  const end = cutSuffix.indexOf(0);
  const suffix = Buffer.from(cutSuffix.subarray(0, end < 0 ? cutSuffix.length : end)).toString();
  return p.endsWith(suffix) && Atomics.sub(ctl, L.CUT, 1) === 1;
}

function writeThrough() {
  const FS = mp.FS;
  const orig = {};
  for (const k of ["open", "write", "rename", "unlink", "rmdir", "mkdir", "truncate", "ftruncate"]) {
    orig[k] = FS[k];
  }
  FS.open = function (p, flags, ...rest) {
    const stream = orig.open.call(FS, p, flags, ...rest);
    const host = hostPath(stream.path);
    if (host && typeof flags === "number" && FS.isFile(stream.node.mode)) {
      if (flags & O_TRUNC) fs.writeFileSync(host, "");
      else if (flags & O_CREAT && !fs.existsSync(host)) fs.writeFileSync(host, "");
    }
    return stream;
  };
  FS.write = function (stream, buffer, offset, length, position, canOwn) {
    const host = hostPath(stream.path);
    if (!host) return orig.write.call(FS, stream, buffer, offset, length, position, canOwn);
    let pos = typeof position === "number" ? position : stream.position;
    if (stream.flags & O_APPEND) pos = stream.node.usedBytes;
    const bytes = Buffer.from(buffer.buffer, buffer.byteOffset + offset, length);
    if (cutArmed(stream.path)) {
      const half = length >> 1;
      const fd = fs.openSync(host, "r+");
      fs.writeSync(fd, bytes, 0, half, pos);
      fs.closeSync(fd);
      log("power cut during a " + length + "-byte write to " + stream.path.slice(FLASH.length + 1) +
        " (" + half + " bytes reached the flash)");
      flush();
      post({ t: "powercut" });
      for (;;) Atomics.wait(ctl, L.CTL_SLOTS - 1, 0); // the power is gone
    }
    const n = orig.write.call(FS, stream, buffer, offset, length, position, canOwn);
    const fd = fs.openSync(host, "r+");
    fs.writeSync(fd, bytes, 0, n, pos);
    fs.closeSync(fd);
    return n;
  };
  FS.rename = function (a, b) {
    orig.rename.call(FS, a, b);
    const [ha, hb] = [hostPath(a), hostPath(b)];
    if (ha && hb) fs.renameSync(ha, hb);
  };
  FS.unlink = function (p) {
    orig.unlink.call(FS, p);
    const h = hostPath(p);
    if (h) fs.rmSync(h, { force: true });
  };
  FS.rmdir = function (p) {
    orig.rmdir.call(FS, p);
    const h = hostPath(p);
    if (h) fs.rmSync(h, { recursive: true, force: true });
  };
  FS.mkdir = function (p, mode) {
    const node = orig.mkdir.call(FS, p, mode);
    const h = hostPath(p);
    if (h) fs.mkdirSync(h, { recursive: true });
    return node;
  };
  FS.truncate = function (p, len) {
    orig.truncate.call(FS, p, len);
    const h = hostPath(typeof p === "string" ? p : FS.getPath(p));
    if (h) fs.truncateSync(h, len);
  };
  FS.ftruncate = function (fd, len) {
    orig.ftruncate.call(FS, fd, len);
    const h = hostPath(FS.getStream(fd)?.path);
    if (h) fs.truncateSync(h, len);
  };
}

// Run in every fresh interpreter, inside a function so the REPL's globals stay
// as clean as a real board's.
const SETUP = `
def _mm_setup(size, fw, names, aliases):
    import sys, os, vfs, gc, time, _vboard
    # time as on the ESP32: seconds since 2000-01-01 from the board's RTC, and
    # sleeps that block (the port's own sleep is a busy loop).
    epoch = 946684800
    gm, mk = time.gmtime, time.mktime
    now = _vboard.secs
    def time_ns():
        return (now() * 1000 + _vboard.millis()) * 1000000
    def gmtime(secs=None):
        return gm((now() if secs is None else int(secs)) + epoch)
    def mktime(t):
        return mk(t) - epoch
    def sleep(s):
        _vboard.sleep(s * 1000)
    def sleep_ms(ms):
        _vboard.sleep(ms)
    def sleep_us(us):
        _vboard.sleep(us / 1000)
    for k, v in (("time", now), ("time_ns", time_ns), ("gmtime", gmtime), ("localtime", gmtime),
                 ("mktime", mktime), ("sleep", sleep), ("sleep_ms", sleep_ms), ("sleep_us", sleep_us)):
        setattr(time, k, v)
    # The firmware modules, compiled from the CPU's own memory (not the flash),
    # as a board has them built in.
    sys.path[:] = [fw]
    for name in names:
        __import__(name)
    for alias, name in aliases:
        sys.modules[alias] = sys.modules[name]

    # ESP32 errno numbers (newlib) for the WebAssembly libc's
    errnos = {63: 1, 44: 2, 29: 5, 8: 9, 6: 11, 48: 12, 2: 13, 10: 16, 20: 17, 75: 18,
              43: 19, 54: 20, 31: 21, 28: 22, 33: 24, 22: 27, 51: 28, 70: 29, 69: 30,
              37: 91, 55: 90, 58: 95}
    # Without a root: with one, VfsPosix.rename() of this port builds both
    # paths in one buffer and renames the new name onto itself (ENOENT).
    disk = vfs.VfsPosix()

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

        def _disk(self, path):
            path = self._abs(path)
            return '${FLASH}' if path == '/' else '${FLASH}' + path

        def mount(self, readonly, mkfs):
            pass

        def umount(self):
            pass

        def chdir(self, path):
            if not call(disk.stat, self._disk(path))[0] & 0x4000:
                raise OSError(20)
            path = self._abs(path)
            self.cwd = path if path == '/' else path + '/'

        def getcwd(self):
            return self.cwd if self.cwd == '/' else self.cwd[:-1]

        def stat(self, path):
            return call(disk.stat, self._disk(path))

        def ilistdir(self, path):
            # (name, type, inode, size) as littlefs on a board lists them
            path = self._disk(path)
            entries = call(lambda p: list(disk.ilistdir(p)), path)
            out = []
            for e in entries:
                size = 0 if e[1] & 0x4000 else disk.stat(path + '/' + e[0])[6]
                out.append((e[0], e[1], 0, size))
            return iter(out)

        def mkdir(self, path):
            call(disk.mkdir, self._disk(path))

        def rmdir(self, path):
            call(disk.rmdir, self._disk(path))

        def remove(self, path):
            call(disk.remove, self._disk(path))

        def rename(self, old, new):
            call(disk.rename, self._disk(old), self._disk(new))

        def open(self, path, mode):
            path = self._disk(path)
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
                child = path + '/' + entry[0]
                if entry[1] & 0x4000:
                    total += self._used(child)
                else:
                    total += (disk.stat(child)[6] + 4095) // 4096 * 4096
            return total

        def statvfs(self, path):
            blocks = size // 4096
            free = max(0, blocks - self._used('${FLASH}') // 4096)
            return (4096, 4096, blocks, free, free, 0, 0, 0, 0, 255)

    os.umount('/')
    os.mount(Flash(), '/')
    os.chdir('/')
    sys.path[:] = ['', '.frozen', '/lib']
    gc.collect()
    _vboard.heap(gc.mem_alloc())

_mm_setup(%SIZE%, '${FW}', %NAMES%, %ALIASES%)
del _mm_setup
`;

async function boot() {
  mp = await loadMicroPython({ linebuffer: false, stdout: fromPython, stderr: fromPython });
  mkdirs(FW);
  for (const name of FIRMWARE) {
    mp.FS.writeFile(FW + "/" + name + ".py", fs.readFileSync(path.join(W.firmware, name + ".py")));
  }
  loadFlash(W.flash);
  writeThrough();
  mp.registerJsModule("_vboard", bridge);
  const aliases = Object.entries(ALIASES).map(([a, n]) => `('${a}', '${n}')`).join(", ");
  mp.runPython(
    SETUP.replace("%SIZE%", String(W.flashSize))
      .replace("%NAMES%", JSON.stringify(FIRMWARE))
      .replace("%ALIASES%", "(" + aliases + ",)"),
  );
}

function runFile(name) {
  // As a board runs boot.py/main.py: in __main__, a traceback printed, not fatal.
  // A Ctrl-C that came while the board booted interrupts it (RUNNING is set
  // from power-on until the REPL waits for input).
  if (!mp.FS.analyzePath(FLASH + "/" + name).exists) return;
  try {
    mp.runPython(
      "import sys\n" +
        "try:\n" +
        "    exec(open('" + name + "').read(), globals())\n" +
        "except BaseException as _e:\n" +
        "    sys.print_exception(_e)\n" +
        "    del _e\n",
    );
  } catch (err) {
    // Raised outside the file's own code (a KeyboardInterrupt landing in the
    // handler above): printed all the same, as the board's pyexec would.
    if (err.name !== "PythonError") throw err;
    fromPython(Buffer.from(err.message));
  } finally {
    Atomics.store(ctl, L.IRQ, 0); // too late for this file: the REPL takes over
    try {
      // A KeyboardInterrupt still pending goes off here, not in the REPL's next
      // command: the VM looks for it at a jump.
      mp.runPython("_i = 0\nwhile _i < 1:\n    _i += 1\ndel _i\n");
    } catch {
      /* that was it */
    }
  }
}

// -- the REPL --------------------------------------------------------------------------

function softReset() {
  flush();
  post({ t: "soft", raw });
  for (;;) Atomics.wait(ctl, L.CTL_SLOTS - 1, 0); // the hardware restarts this CPU
}

// Hand one byte to the interpreter's REPL; true when it asked for a soft reset.
function toRepl(c) {
  const before = out.length;
  // A byte that may run code: Ctrl-C on the console interrupts it meanwhile.
  const runs = c === 0x04 || (!raw && (c === 0x0d || c === 0x0a));
  if (runs) Atomics.store(ctl, L.RUNNING, 1);
  let ret;
  try {
    ret = mp.replProcessChar(c);
  } finally {
    if (runs) Atomics.store(ctl, L.RUNNING, 0);
    Atomics.store(ctl, L.IRQ, 0);
  }
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
      send("\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04>");
      return false;
    }
    // Run it as a raw-REPL command; that REPL answers "OK" first, a raw paste does not.
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

function replLoop() {
  Atomics.store(ctl, L.RUNNING, 0);
  Atomics.store(ctl, L.IRQ, 0);
  let tail = Atomics.load(ctl, L.TAIL);
  for (;;) {
    flush();
    const head = Atomics.load(ctl, L.HEAD);
    if (head === tail) {
      Atomics.wait(ctl, L.HEAD, head);
      continue;
    }
    while (tail !== head) {
      const c = ring[tail & (L.RING_BYTES - 1)];
      tail = (tail + 1) | 0;
      Atomics.store(ctl, L.TAIL, tail);
      let reset;
      if (paste) reset = pasteByte(c);
      else if (raw) reset = rawByte(c);
      else reset = toRepl(c);
      if (reset) softReset();
    }
  }
}

await boot();
post({ t: "up" }); // powered and running: boot.py and main.py come next
if (W.soft) send("MPY: soft reboot\r\n");
lastOut = 0;
runFile("boot.py");
if (!W.raw && W.runMain) runFile("main.py");
Atomics.store(ctl, L.RUNNING, 0); // from here on only what the REPL runs
Atomics.store(ctl, L.IRQ, 0);
if (W.raw) {
  muted = true;
  mp.replInit();
  mp.replProcessChar(0x01);
  muted = false;
  raw = true;
  send(RAW_PROMPT + ">");
} else {
  mp.replInit(); // the banner and ">>> ", as a board prints after reset
}
flush();
replLoop();
