// A virtual ESP32-class MicroPython board: the real MicroPython interpreter (the
// WebAssembly port from npm) with the board modules a terminal's firmware uses,
// each bridged to something real on this machine.
//
// usage: node tools/virtual_board.mjs [--fd N] [--flash DIR] [--flash-size BYTES]
//          [--no-main] [--uart ID=DEVICE]... [--wlan SSID[:KEY]]... [--rssi DBM]
//          [--dns NAME=IP]... [--route IP:PORT=HOST:PORT]... [--ip-lost S]
//          [--rtc 2000|host|host+S|host-S] [--mac HEX12] [--control HOST:PORT]
//          [--console-log FILE] [--trace]
//
// The board, as its firmware sees it (tools/vboard/firmware/*.py, built in like
// an ESP32's C modules and frozen ones; see each file for the port it follows):
//   console   file descriptor N (default 3): normally the master side of a pty
//             whose slave (/dev/pts/K) mpremote opens like a USB serial port
//             (tests/support/virtual_board.py makes it). Friendly REPL, raw REPL,
//             raw-paste mode, Ctrl-D soft reset, Ctrl-C interrupting running code
//             (at its next sleep, I/O call or printed line). Output nobody reads
//             is queued (256 KiB) and then dropped, as on a UART nobody listens to.
//   flash     DIR is the board's filesystem (created if missing), mounted at /:
//             every write reaches DIR at once; errors carry ESP32 errno numbers;
//             os.statvfs() reports --flash-size bytes (default 2 MiB, the data
//             partition of a 4 MB ESP32; reported, not enforced).
//   machine   UART(id) wired to --uart ID=DEVICE (a pty or tty; unwired UARTs
//             send into the void and receive nothing), paced at the configured
//             baud rate; Pin (outputs logged, inputs set from the control
//             interface); WDT (a board that stops feeding it is reset); reset(),
//             reset_cause(), unique_id() (--mac, default derived from DIR), RTC
//             (survives resets, not power cuts; at power-on it reads --rtc:
//             2000-01-01 by default as a board without a backup battery, or the
//             host's clock, or the host's clock S seconds off).
//   network   WLAN station; the access points are --wlan SSID[:KEY] (none: no
//             network), signal --rssi (default -58).
//   socket    real TCP/UDP of this machine: names from --dns, --route to reach a
//             local service at the address the firmware uses (NTP's port 123).
//   tls, ssl  client TLS of Node.js, verified like mbedTLS on an ESP32.
//   ntptime   SNTP over the board's UDP.
// Each reset (Ctrl-D, machine.reset(), watchdog, control "reset") runs a fresh
// interpreter in a new CPU thread (tools/vboard/cpu.mjs) on the same flash;
// boot.py, then main.py (unless --no-main), as a board boots.
//
// Control interface (--control HOST:PORT, port 0 picks one): JSON lines, one
// request, one answer {"ok": true, ...} or {"ok": false, "error": "..."}:
//   {"cmd": "status"}                       boots, reset cause, link, watchdog
//   {"cmd": "wlan", "up": false|true}       take the access point away / back
//   {"cmd": "pin", "pin": N, "value": 0|1}  level on an input pin
//   {"cmd": "log"}                          {"pins": [[t_ms, pin, level]...],
//                                            "uart": {"2": {"tx": [[t0, t1, n]...],
//                                            "rx": [[t0, t1, n]...], "overflow": n}}}
//                                            (t in ms of the board process's clock)
//   {"cmd": "reset"}                        the reset button (HARD_RESET)
//   {"cmd": "power_cut"}                    the power goes at once: the process
//                                            kills itself (SIGKILL); start it again
//                                            with the same DIR to power it back on
//   {"cmd": "power_cut", "at_write": N, "suffix": ".seg"}
//                                            the power goes during the N-th later
//                                            flash write to a file ending in suffix:
//                                            half of that write reaches the flash
// On stdout: "control HOST:PORT" (with --control), then "ready" once the CPU
// runs (boot.py and main.py come next), "stopped" when it ends (SIGTERM, SIGINT, the line
// closing). Diagnostics and the console's output (--console-log, or with
// --trace on stderr) go elsewhere. tests/support/virtual_board.py wraps all this.
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tty from "node:tty";
import { Worker } from "node:worker_threads";
import * as L from "./vboard/layout.mjs";
import { E, Failure, Network } from "./vboard/net.mjs";
import { Gpio, Uart, now } from "./vboard/uart.mjs";

const HERE = path.dirname(new URL(import.meta.url).pathname);
const PWRON_RESET = 1;
const HARD_RESET = 2;
const WDT_RESET = 3;
const DEEPSLEEP_RESET = 4;
const SOFT_RESET = 5;
const CONSOLE_QUEUE = 256 * 1024;
const USAGE =
  "usage: node tools/virtual_board.mjs [--fd N] [--flash DIR] [--flash-size BYTES] [--no-main] " +
  "[--uart ID=DEVICE]... [--wlan SSID[:KEY]]... [--rssi DBM] [--dns NAME=IP]... " +
  "[--route IP:PORT=HOST:PORT]... [--ip-lost S] [--rtc 2000|host|host+S|host-S] [--mac HEX12] " +
  "[--control HOST:PORT] [--console-log FILE] [--trace]";

function die(msg) {
  console.error("virtual_board: " + msg);
  console.error(USAGE);
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    fd: 3, flash: null, flashSize: 2 * 1024 * 1024, runMain: true, uarts: new Map(), wlan: [],
    rssi: -58, dns: new Map(), routes: new Map(), ipLostMs: 120000, rtc: "2000", mac: null,
    control: null, consoleLog: null, trace: false,
  };
  const need = (i) => (i < argv.length ? argv[i] : die(argv[i - 1] + " needs a value"));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--fd") o.fd = Number(need(++i));
    else if (a === "--flash") o.flash = need(++i);
    else if (a === "--flash-size") o.flashSize = Number(need(++i));
    else if (a === "--no-main") o.runMain = false;
    else if (a === "--run-main") o.runMain = true; // the default; kept for old callers
    else if (a === "--uart") {
      const [id, dev] = need(++i).split(/=(.*)/s);
      if (!/^[0-2]$/.test(id) || !dev) die("--uart ID=DEVICE with ID 0..2");
      o.uarts.set(Number(id), dev);
    } else if (a === "--wlan") {
      const [ssid, key] = need(++i).split(/:(.*)/s);
      o.wlan.push({ ssid, key: key || "" });
    } else if (a === "--rssi") o.rssi = Number(need(++i));
    else if (a === "--dns") {
      const [name, ip] = need(++i).split("=");
      if (!net.isIPv4(ip || "")) die("--dns NAME=IPV4");
      o.dns.set(name, ip);
    } else if (a === "--route") {
      const m = /^([\d.]+:\d+)=(.+):(\d+)$/.exec(need(++i));
      if (!m) die("--route IP:PORT=HOST:PORT");
      o.routes.set(m[1], [m[2], Number(m[3])]);
    } else if (a === "--ip-lost") o.ipLostMs = Number(need(++i)) * 1000;
    else if (a === "--rtc") o.rtc = need(++i);
    else if (a === "--mac") o.mac = need(++i);
    else if (a === "--control") o.control = need(++i);
    else if (a === "--console-log") o.consoleLog = need(++i);
    else if (a === "--trace") o.trace = true;
    else die("unknown argument " + a);
  }
  if (!Number.isInteger(o.fd) || o.fd < 0) die("--fd needs a file descriptor number");
  if (!Number.isInteger(o.flashSize) || o.flashSize < 4096) die("--flash-size needs a byte count >= 4096");
  if (!/^(2000|host|host[+-]\d+)$/.test(o.rtc)) die("--rtc 2000|host|host+S|host-S");
  if (o.mac !== null && !/^[0-9a-fA-F]{12}$/.test(o.mac)) die("--mac needs 12 hex digits");
  if (!o.flash) o.flash = fs.mkdtempSync(path.join(process.env.TMPDIR || "/tmp", "vboard-flash-"));
  o.flash = path.resolve(o.flash);
  const mac = o.mac || crypto.createHash("sha256").update(o.flash).digest("hex").slice(0, 12);
  o.mac = Buffer.from(mac, "hex");
  o.mac[0] = (o.mac[0] & 0xfe) | 0x02; // a locally administered unicast address
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const shared = L.makeShared();
const ctl = new Int32Array(shared.ctl);
const clock = new Float64Array(shared.clock);
const ring = new Uint8Array(shared.ring);
const data = new Uint8Array(shared.data);
const cutSuffix = new Uint8Array(shared.cutSuffix);
const gpio = new Gpio();
const uarts = [0, 1, 2].map((id) => new Uart(id, opts.uarts.get(id) || null));
const network = new Network(opts);
const consoleLog = opts.consoleLog ? fs.openSync(opts.consoleLog, "a") : null;
let rtcMemory = Buffer.alloc(0);
let cpu = null;
let boots = 0;
let cause = PWRON_RESET;
let pending = null; // { cancel } of the request the CPU waits on
let wdt = null; // { timeout, last }
let ready = false;
let stopping = false;

// Power-on RTC: what a board's clock reads when the power comes.
{
  const m = /^host([+-]\d+)?$/.exec(opts.rtc);
  clock[L.RTC_SLOT] = m ? Number(m[1] || 0) * 1000 : Date.UTC(2000, 0, 1) - Date.now();
}

// -- the console line ------------------------------------------------------------------

let txQueue = [];
let txQueued = 0;
let txTimer = null;
let dropped = 0;

function consoleWrite(bytes) {
  if (consoleLog !== null) fs.writeSync(consoleLog, bytes);
  if (opts.trace) console.error("tx", JSON.stringify(Buffer.from(bytes).toString("latin1")));
  txQueue.push(Buffer.from(bytes));
  txQueued += bytes.length;
  while (txQueued > CONSOLE_QUEUE) {
    const old = txQueue.shift();
    txQueued -= old.length;
    dropped += old.length;
  }
  drainConsole();
}

function drainConsole() {
  if (txTimer) return;
  while (txQueue.length) {
    const buf = txQueue[0];
    let n = 0;
    try {
      n = fs.writeSync(opts.fd, buf);
    } catch (err) {
      if (err.code !== "EAGAIN") return; // the line is gone: nothing more to say
    }
    if (n < buf.length) {
      txQueue[0] = buf.subarray(n);
      txQueued -= n;
      txTimer = setTimeout(() => {
        txTimer = null;
        drainConsole();
      }, 2); // nobody reads just now: try again shortly
      return;
    }
    txQueue.shift();
    txQueued -= n;
  }
}

function consoleRead(chunk) {
  if (opts.trace) console.error("rx", JSON.stringify(chunk.toString("latin1")));
  for (const b of chunk) {
    if (b === 0x03 && Atomics.load(ctl, L.RUNNING)) {
      // The UART's interrupt character: the running code gets KeyboardInterrupt.
      Atomics.store(ctl, L.IRQ, 1);
      Atomics.notify(ctl, L.IRQ);
      if (pending) {
        pending.cancel();
        answer(-E.EINTR);
      }
      continue;
    }
    const head = Atomics.load(ctl, L.HEAD);
    if (((head - Atomics.load(ctl, L.TAIL)) | 0) >= L.RING_BYTES) continue; // overrun: lost
    ring[head & (L.RING_BYTES - 1)] = b;
    Atomics.store(ctl, L.HEAD, (head + 1) | 0);
  }
  Atomics.notify(ctl, L.HEAD);
}

// -- the CPU ---------------------------------------------------------------------------

function answer(status, bytes = null, text = null) {
  pending = null;
  let len = 0;
  if (bytes) {
    len = Math.min(bytes.length, L.DATA_BYTES - 1024);
    data.set(bytes.subarray(0, len), 0);
  }
  let tl = 0;
  if (text) {
    const t = Buffer.from(text, "utf8").subarray(0, 1024);
    data.set(t, len);
    tl = t.length;
  }
  Atomics.store(ctl, L.LEN, len);
  Atomics.store(ctl, L.TEXT, tl);
  Atomics.store(ctl, L.STATUS, status);
  Atomics.store(ctl, L.RPC, 1);
  Atomics.notify(ctl, L.RPC);
}

function fail(err) {
  if (err instanceof Failure) {
    if (err.text) answer(L.EXC, null, err.text);
    else answer(-err.errno);
  } else {
    console.error("virtual_board: internal error", err);
    answer(L.EXC, null, "OSError:virtual board: " + err.message);
  }
}

// A request of the CPU; the answer goes back through answer(), now or later.
function request(m) {
  const later = (cancel) => {
    pending = { cancel: cancel || (() => {}) };
  };
  const n = (v) => (typeof v === "number" ? answer(v) : answer(v.length, v));
  try {
    switch (m.op) {
      case "pin":
        return answer(gpio.set(m.a, m.b, m.c));
      case "pin_pull":
        gpio.pull(m.a, m.b);
        return answer(0);
      case "uart_open": {
        const [rxbuf, txbuf] = m.s.split(",").map(Number);
        uarts[m.a].configure(m.b, m.c, rxbuf, txbuf);
        return answer(0);
      }
      case "uart_close":
        uarts[m.a].disable();
        return answer(0);
      case "uart_any":
        return answer(uarts[m.a].any());
      case "uart_read": {
        const cap = m.n;
        return later(uarts[m.a].read(cap, m.b, m.c, (bytes) => (bytes.length ? n(bytes) : answer(-E.EAGAIN))));
      }
      case "uart_write":
        return later(uarts[m.a].write(m.d || Buffer.alloc(0), (k) => answer(k)));
      case "uart_txdone":
        return answer(uarts[m.a].txdone() ? 1 : 0);
      case "uart_wait_tx":
        return later(uarts[m.a].waitTx(m.b, (ok) => answer(ok)));
      case "wdt_start":
        wdt = { timeout: m.a, last: now() };
        return answer(0);
      case "reset":
        setImmediate(() => restart(m.s === "deepsleep" ? DEEPSLEEP_RESET : HARD_RESET, m.s === "deepsleep" ? m.a : 0));
        return later();
      case "rtc_set":
        clock[L.RTC_SLOT] = Number(m.s) * 1000 + m.a - Date.now();
        return answer(0);
      case "rtc_memory":
        if (m.s === "set") {
          rtcMemory = Buffer.from(m.d || []);
          return answer(0);
        }
        return n(rtcMemory);
      case "unique_id":
        return n(opts.mac);
      case "wlan_state":
        return answer(0, null, JSON.stringify(network.wlan.state()));
      case "wlan_active":
        network.wlan.setActive(m.b === 1);
        return answer(0);
      case "wlan_connect": {
        const [ssid, key] = JSON.parse(m.s);
        network.wlan.connect(ssid, key);
        return answer(0);
      }
      case "wlan_disconnect":
        network.wlan.disconnect();
        return answer(0);
      case "wlan_scan":
        return answer(0, null, JSON.stringify(network.wlan.apUp ? opts.wlan.map((ap) =>
          [ap.ssid, [...opts.mac], 6, opts.rssi, ap.key ? 3 : 0, false]) : []));
      case "dns":
        return answer(0, null, network.resolve(m.s));
      case "sock_new":
        return answer(network.create(m.a));
      case "sock_close":
        network.close(m.a);
        return answer(0);
      case "sock_bind":
        network.bind(m.a, m.s, m.b);
        return answer(0);
      case "sock_connect":
        return later(network.connect(m.a, m.s, m.b, m.c, (st) => answer(st)));
      case "sock_recv":
        return later(network.recv(m.a, m.n, m.b, m.c, (r, from) =>
          typeof r === "number" ? answer(r) : answer(r.length, r, from || null)));
      case "sock_send":
        return later(network.send(m.a, m.d || Buffer.alloc(0), m.b, (r) => answer(r)));
      case "sock_sendto":
        return later(network.sendto(m.a, m.d || Buffer.alloc(0), m.s, m.b, (r) => answer(r)));
      case "sock_poll":
        return answer(network.poll(m.a, m.b));
      case "tls_check":
        try {
          new crypto.X509Certificate(Buffer.from(m.d || []));
        } catch {
          throw new Failure(0, "ValueError:invalid cert");
        }
        return answer(0);
      case "tls_ciphers":
        return answer(0, null, crypto.getCiphers().join(","));
      case "tls_wrap":
        return later(network.wrap(m.a, m.s, m.b, m.c, m.d || Buffer.alloc(0), (r) =>
          r instanceof Failure ? fail(r) : answer(r)));
      case "tls_peercert":
        return n(network.peerCert(m.a));
      case "tls_cipher":
        return answer(0, null, network.cipher(m.a));
      default:
        throw new Failure(0, "OSError:virtual board: no such request " + m.op);
    }
  } catch (err) {
    fail(err);
  }
}

function startCpu(why, soft = false, raw = false) {
  boots++;
  cause = why;
  Atomics.store(ctl, L.RUNNING, 1); // booting: a Ctrl-C now stops boot.py/main.py
  Atomics.store(ctl, L.IRQ, 0);
  Atomics.store(ctl, L.RPC, 0);
  cpu = new Worker(path.join(HERE, "vboard", "cpu.mjs"), {
    workerData: {
      shared, flash: opts.flash, flashSize: opts.flashSize, cause: why, soft, raw,
      runMain: opts.runMain, firmware: path.join(HERE, "vboard", "firmware"),
    },
  });
  const mine = cpu;
  cpu.on("message", (m) => {
    if (cpu !== mine) return; // a CPU that was reset has nothing more to say
    switch (m.t) {
      case "tx":
        return consoleWrite(m.b);
      case "rpc":
        return request(m);
      case "feed":
        if (wdt) wdt.last = now();
        return undefined;
      case "log":
        return console.error("virtual_board: " + m.line);
      case "up":
        if (!ready) {
          ready = true;
          process.stdout.write("ready\n");
        }
        return undefined;
      case "soft":
        return restart(SOFT_RESET, 0, m.raw);
      case "powercut":
        return powerCut();
      default:
        return undefined;
    }
  });
  cpu.on("error", (err) => {
    console.error("virtual_board: CPU crashed:", err);
    if (cpu === mine) restart(HARD_RESET); // a panic resets an ESP32
  });
}

async function restart(why, delayMs = 0, raw = false) {
  const old = cpu;
  cpu = null;
  if (pending) pending.cancel();
  pending = null;
  if (old) await old.terminate();
  network.closeAll();
  for (const u of uarts) u.disable();
  if (why !== SOFT_RESET) {
    // a hard reset: the chip starts from scratch, only the RTC keeps going
    network.reset();
    gpio.reset();
    wdt = null;
    Atomics.store(ctl, L.TAIL, Atomics.load(ctl, L.HEAD)); // the UART FIFO is cleared
    const names = { [HARD_RESET]: "reset", [WDT_RESET]: "watchdog reset", [DEEPSLEEP_RESET]: "deep sleep wake-up" };
    console.error("virtual_board: " + (names[why] || "reset"));
  }
  if (stopping) return;
  if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  startCpu(why, why === SOFT_RESET, raw);
}

function powerCut() {
  console.error("virtual_board: power cut");
  process.kill(process.pid, "SIGKILL");
}

setInterval(() => {
  if (wdt && cpu && now() - wdt.last > wdt.timeout) {
    wdt = null;
    restart(WDT_RESET);
  }
}, 50).unref();

// -- control interface -----------------------------------------------------------------

function control(req) {
  switch (req.cmd) {
    case "status":
      return {
        boots, reset_cause: cause, wlan: network.wlan.state(), ap_up: network.wlan.apUp,
        watchdog_ms: wdt ? wdt.timeout : null, console_dropped: dropped,
        uarts: Object.fromEntries(uarts.map((u) => [u.id, { enabled: u.enabled, baudrate: u.baud }])),
      };
    case "wlan":
      network.wlan.setAp(Boolean(req.up));
      return {};
    case "pin":
      gpio.input(Number(req.pin), Number(req.value));
      return {};
    case "log": {
      const uart = {};
      for (const u of uarts) uart[u.id] = { tx: u.txLog, rx: u.rxLog, overflow: u.overflow };
      return { pins: gpio.log, uart, now: now() };
    }
    case "reset":
      restart(HARD_RESET);
      return {};
    case "power_cut":
      if (req.at_write === undefined) {
        setImmediate(powerCut);
        return {};
      }
      cutSuffix.fill(0);
      cutSuffix.set(Buffer.from(String(req.suffix || "")).subarray(0, 63));
      Atomics.store(ctl, L.CUT, Number(req.at_write));
      return {};
    default:
      throw new Error("unknown cmd " + JSON.stringify(req.cmd));
  }
}

function serveControl(spec) {
  const i = spec.lastIndexOf(":");
  const server = net.createServer((sock) => {
    let buf = "";
    sock.on("data", (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let reply;
        try {
          reply = { ok: true, ...control(JSON.parse(line)) };
        } catch (err) {
          reply = { ok: false, error: String(err.message || err) };
        }
        sock.write(JSON.stringify(reply) + "\n");
      }
    });
    sock.on("error", () => {});
  });
  server.listen(Number(spec.slice(i + 1)), spec.slice(0, i), () => {
    const a = server.address();
    process.stdout.write("control " + a.address + ":" + a.port + "\n");
  });
  server.unref();
}

// -- power -----------------------------------------------------------------------------

function stop(why) {
  if (stopping) return;
  stopping = true;
  if (why) console.error("virtual_board: " + why);
  const done = () => {
    process.stdout.write("stopped\n");
    process.exit(0);
  };
  if (cpu) cpu.terminate().then(done, done);
  else done();
}

process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));

fs.mkdirSync(opts.flash, { recursive: true });
if (opts.control) serveControl(opts.control);
const input = new tty.ReadStream(opts.fd);
input.on("data", consoleRead);
input.on("error", (err) => stop("line closed (" + err.code + ")"));
input.on("end", () => stop("line closed"));
startCpu(PWRON_RESET);
