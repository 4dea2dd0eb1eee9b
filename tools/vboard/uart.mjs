// The virtual board's UARTs and GPIO, as the firmware's machine.UART/Pin see them.
//
// A UART is wired to a serial device given on the command line (a pty whose
// other side is, for instance, firmware_sim's Modbus RTU sensors). The wire runs
// at the configured baud rate both ways: a byte written leaves the transmitter
// one character time (start, data, parity and stop bits) after the previous
// one, and a byte from the device is in the receive buffer only once its stop
// bit has arrived. Every transmission and reception is logged with its times,
// and every pin level set, so that a test can check the RS-485 driver-enable
// pin around each transmit.
import fs from "node:fs";
import tty from "node:tty";

const LOG_MAX = 20000;
export const now = () => performance.now();

function wait(done, deadline, finish) {
  // Poll at 1 ms, the resolution of the board's own ticks: `done()` true or the
  // deadline passed ends it. Returns a cancel function.
  let timer = null;
  const step = () => {
    timer = null;
    if (done() || (deadline >= 0 && now() >= deadline)) finish();
    else timer = setTimeout(step, 1);
  };
  step();
  return () => {
    if (timer) clearTimeout(timer);
  };
}

export class Uart {
  constructor(id, path) {
    this.id = id;
    this.path = path;
    this.enabled = false;
    this.baud = 115200;
    this.frame = 10; // bits per character
    this.rxbuf = 256;
    this.txbuf = 256;
    this.wire = []; // [byte, time its stop bit arrives]
    this.rxWire = 0;
    this.buf = [];
    this.overflow = 0;
    this.txEnd = 0;
    this.txLog = [];
    this.rxLog = [];
    this.fd = null;
    if (path) this._connect();
  }

  _connect() {
    this.fd = fs.openSync(this.path, fs.constants.O_RDWR | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
    this.stream = new tty.ReadStream(this.fd);
    this.stream.setRawMode(true);
    this.stream.on("data", (chunk) => this._arrive(chunk));
    this.stream.on("error", () => {});
  }

  charMs() {
    return (this.frame * 1000) / this.baud;
  }

  configure(baud, frame, rxbuf, txbuf) {
    this.enabled = true;
    this.baud = baud;
    this.frame = frame;
    this.rxbuf = rxbuf;
    this.txbuf = txbuf;
  }

  disable() {
    this.enabled = false;
    this.wire = [];
    this.buf = [];
  }

  _arrive(chunk) {
    if (!this.enabled) return; // no driver installed: the bytes fall on the floor
    const t0 = Math.max(now(), this.rxWire);
    const c = this.charMs();
    for (let i = 0; i < chunk.length; i++) this.wire.push([chunk[i], t0 + (i + 1) * c]);
    this.rxWire = t0 + chunk.length * c;
    this.rxLog.push([t0, this.rxWire, chunk.length]);
    if (this.rxLog.length > LOG_MAX) this.rxLog.shift();
  }

  _settle() {
    const t = now();
    while (this.wire.length && this.wire[0][1] <= t) {
      const [b] = this.wire.shift();
      if (this.buf.length < this.rxbuf) this.buf.push(b);
      else this.overflow++;
    }
  }

  any() {
    this._settle();
    return this.buf.length;
  }

  _take(n) {
    return Buffer.from(this.buf.splice(0, n));
  }

  // One uart_read_bytes pair of the ESP32 port: the first byte within
  // `first` ms, then up to n-1 more within `rest` ms. Calls back with the bytes.
  read(n, first, rest, done) {
    let phase = 1;
    let deadline = now() + Math.max(0, first);
    let cancel = null;
    const check = () => (phase === 1 ? this.any() >= 1 : this.any() >= n);
    const finish = () => {
      if (phase === 1 && this.any() >= 1 && n > 1) {
        phase = 2;
        deadline = now() + Math.max(0, rest);
        cancel = wait(check, deadline, finish);
        return;
      }
      done(this._take(n));
    };
    cancel = wait(check, deadline, finish);
    return () => cancel && cancel();
  }

  // Queue bytes on the wire; calls back once they fit the transmit buffer
  // (txbuf plus the 128-byte hardware FIFO), as uart_write_bytes returns.
  write(bytes, done) {
    const c = this.charMs();
    const start = Math.max(now(), this.txEnd);
    this.txEnd = start + bytes.length * c;
    this.txLog.push([start, this.txEnd, bytes.length]);
    if (this.txLog.length > LOG_MAX) this.txLog.shift();
    if (this.fd !== null && this.enabled) {
      let sent = 0;
      const pump = () => {
        const due = Math.min(bytes.length, Math.floor((now() - start) / c + 1e-9));
        if (due > sent) {
          try {
            fs.writeSync(this.fd, bytes, sent, due - sent);
          } catch {
            /* the device side is gone: the bytes are lost on the wire */
          }
          sent = due;
        }
        if (sent < bytes.length) setTimeout(pump, 1);
      };
      setTimeout(pump, Math.max(0, start + c - now()));
    }
    const room = this.txbuf + 128;
    const until = this.txEnd - room * c;
    return wait(() => now() >= until, -1, () => done(bytes.length));
  }

  txdone() {
    return now() >= this.txEnd;
  }

  waitTx(timeout, done) {
    return wait(() => this.txdone(), now() + timeout, () => done(this.txdone() ? 1 : 0));
  }

  close() {
    if (this.stream) this.stream.destroy();
    this.stream = null;
  }
}

export class Gpio {
  constructor() {
    this.pins = new Map(); // id -> { mode, out, input, pull }
    this.log = [];
  }

  _pin(id) {
    let p = this.pins.get(id);
    if (!p) {
      p = { mode: -1, out: 0, input: null, pull: 0 };
      this.pins.set(id, p);
    }
    return p;
  }

  // machine.Pin: set the level (if value >= 0) then the mode (if >= 0); the
  // answer is what value() reads: the driven level of an output, else the input.
  set(id, mode, value) {
    const p = this._pin(id);
    if (value >= 0) p.out = value;
    if (mode >= 0) p.mode = mode;
    const output = p.mode === 3 || p.mode === 7;
    if (output && (value >= 0 || mode >= 0)) {
      this.log.push([now(), id, p.out]);
      if (this.log.length > LOG_MAX) this.log.shift();
    }
    if (output) return p.out;
    if (p.input !== null) return p.input;
    return p.pull === 1 ? 1 : 0;
  }

  pull(id, pull) {
    this._pin(id).pull = pull;
  }

  input(id, level) {
    this._pin(id).input = level ? 1 : 0;
  }

  reset() {
    for (const p of this.pins.values()) {
      p.mode = -1;
      p.out = 0;
    }
  }
}
