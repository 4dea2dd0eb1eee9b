// The virtual board's network: a WLAN station with a simulated access point,
// and the TCP, UDP and TLS sockets of the firmware's socket/tls modules, each a
// real socket of this machine.
//
// The access point (--wlan SSID[:KEY]) can be taken away and brought back by
// the control interface. While the link is down, as with lwIP on an ESP32: new
// connections fail with EHOSTUNREACH, names do not resolve (-202), open TCP
// connections stall (nothing in, writes held up to lwIP's 5744-byte send
// buffer) and are aborted (ECONNABORTED) when the link stays down longer than
// ESP-IDF's IP-lost timer (--ip-lost, default 120 s). The link comes back by
// itself (the station retries while connect() was asked for).
//
// Addresses: numeric IPv4, or names from --dns NAME=IP; --route IP:PORT=HOST:PORT
// sends what the board addresses to IP:PORT (TCP and UDP) to HOST:PORT on this
// machine, e.g. the board's NTP server (port 123) to a test's responder.
import dgram from "node:dgram";
import net from "node:net";
import tls from "node:tls";
import { now } from "./uart.mjs";

export const E = {
  EAGAIN: 11,
  EBADF: 9,
  EINVAL: 22,
  ECONNRESET: 104,
  ECONNABORTED: 113,
  ETIMEDOUT: 116,
  EHOSTUNREACH: 118,
  EINPROGRESS: 119,
  ENOTCONN: 128,
  EINTR: 4,
};
const EAI_FAIL = 202;
const SND_BUF = 5744;
const STAT = { IDLE: 1000, CONNECTING: 1001, GOT_IP: 1010, BEACON_TIMEOUT: 200, NO_AP_FOUND: 201, WRONG_PASSWORD: 202 };
const NOT_TRUSTED = "The certificate is not correctly signed by the trusted CA";
const VERIFY_TEXT = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: NOT_TRUSTED,
  UNABLE_TO_GET_ISSUER_CERT: NOT_TRUSTED,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: NOT_TRUSTED,
  SELF_SIGNED_CERT_IN_CHAIN: NOT_TRUSTED,
  DEPTH_ZERO_SELF_SIGNED_CERT: NOT_TRUSTED,
  CERT_SIGNATURE_FAILURE: NOT_TRUSTED,
  CERT_REVOKED: "The certificate has been revoked (is on a CRL)",
};
const DATE_ERRORS = new Set(["CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"]);

export class Failure extends Error {
  // An answer to the CPU: -errno, or an exception with its text.
  constructor(errno, text = null) {
    super(text || "errno " + errno);
    this.errno = errno;
    this.text = text;
  }
}

export class Wlan {
  constructor(opts, onChange) {
    this.aps = opts.wlan; // [{ ssid, key }]
    this.rssi = opts.rssi;
    this.mac = opts.mac;
    this.apUp = true;
    this.onChange = onChange;
    this.reset();
  }

  reset() {
    clearTimeout(this.timer);
    this.active = false;
    this.want = null;
    this.connected = false;
    this.reason = 0;
  }

  state() {
    let status = STAT.IDLE;
    if (this.connected) status = STAT.GOT_IP;
    else if (this.want && (this.reason === 0 || this.reason === STAT.BEACON_TIMEOUT)) status = STAT.CONNECTING;
    else if (this.reason) status = this.reason;
    return {
      active: this.active,
      connected: this.connected,
      status,
      rssi: this.rssi,
      ssid: this.want ? this.want[0] || "" : "",
      mac: [...this.mac],
      ifconfig: this.connected ? ["192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1"] : ["0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0"],
    };
  }

  setActive(on) {
    if (!on) {
      this.want = null;
      this._drop(0);
    }
    this.active = on;
  }

  connect(ssid, key) {
    if (!this.active) throw new Failure(0, "OSError:Wifi Not Started");
    this.want = [ssid, key];
    this.reason = 0;
    this._attempt();
  }

  disconnect() {
    this.want = null;
    this._drop(8); // WIFI_REASON_ASSOC_LEAVE: status() says idle
    this.reason = 0;
  }

  setAp(up) {
    this.apUp = up;
    if (!up && this.connected) this._drop(STAT.BEACON_TIMEOUT);
    if (up && this.want && !this.connected) this._attempt();
  }

  _drop(reason) {
    clearTimeout(this.timer);
    const was = this.connected;
    this.connected = false;
    this.reason = reason;
    if (was) this.onChange(false);
    if (this.want && this.active) this.timer = setTimeout(() => this._attempt(), 1000);
  }

  _attempt() {
    clearTimeout(this.timer);
    // association and DHCP take a moment on a board
    this.timer = setTimeout(() => {
      if (!this.want || !this.active) return;
      const [ssid, key] = this.want;
      const ap = this.aps.find((a) => a.ssid === ssid);
      if (!ap || !this.apUp) {
        this.reason = STAT.NO_AP_FOUND;
        this.timer = setTimeout(() => this._attempt(), 1000);
      } else if ((ap.key || "") !== (key || "")) {
        this.reason = STAT.WRONG_PASSWORD;
        this.timer = setTimeout(() => this._attempt(), 1000);
      } else {
        this.connected = true;
        this.reason = 0;
        this.onChange(true);
      }
    }, 300);
  }
}

class Conn {
  constructor(id, type) {
    this.id = id;
    this.type = type; // 1 TCP, 2 UDP
    this.sock = null; // net.Socket, then tls.TLSSocket after wrap; dgram.Socket for UDP
    this.inbox = [];
    this.size = 0;
    this.eof = false;
    this.error = 0;
    this.connecting = false;
    this.connected = false;
    this.held = [];
    this.heldBytes = 0;
    this.peer = null;
  }

  push(chunk, from) {
    this.inbox.push(from ? [chunk, from] : chunk);
    this.size += chunk.length;
  }
}

export class Network {
  constructor(opts) {
    this.opts = opts;
    this.conns = new Map();
    this.next = 1;
    this.waiters = new Set();
    this.lostTimer = null;
    this.wlan = new Wlan(opts, (up) => this._link(up));
  }

  up() {
    return this.wlan.connected;
  }

  reset() {
    for (const c of this.conns.values()) this._destroy(c);
    this.conns.clear();
    this.wlan.reset();
    clearTimeout(this.lostTimer);
  }

  closeAll() {
    for (const c of this.conns.values()) this._destroy(c);
    this.conns.clear();
  }

  _destroy(c) {
    try {
      if (c.type === 1) c.sock?.destroy();
      else c.sock?.close();
    } catch {
      /* already closed */
    }
  }

  _link(up) {
    clearTimeout(this.lostTimer);
    for (const c of this.conns.values()) {
      if (c.type !== 1 || !c.sock) continue;
      if (up) {
        c.sock.resume();
        for (const b of c.held) c.sock.write(b);
        c.held = [];
        c.heldBytes = 0;
      } else {
        c.sock.pause();
      }
    }
    if (!up) {
      this.lostTimer = setTimeout(() => {
        for (const c of this.conns.values()) {
          if (c.type === 1 && c.connected) {
            c.error = E.ECONNABORTED;
            c.sock.destroy();
          }
        }
      }, this.opts.ipLostMs);
    }
    this._wake();
  }

  _wake() {
    for (const w of [...this.waiters]) w();
  }

  // Wait until ready() is true, the link changes, data arrives, or `ms`
  // passes (-1: for ever); then finish(). Returns a cancel function.
  _wait(ready, ms, finish) {
    if (ready()) {
      finish();
      return () => {};
    }
    let timer = null;
    const done = () => {
      this.waiters.delete(check);
      if (timer) clearTimeout(timer);
      finish();
    };
    const check = () => {
      if (ready()) done();
    };
    this.waiters.add(check);
    if (ms >= 0) timer = setTimeout(done, ms);
    return () => {
      this.waiters.delete(check);
      if (timer) clearTimeout(timer);
    };
  }

  conn(id) {
    const c = this.conns.get(id);
    if (!c) throw new Failure(E.EBADF);
    return c;
  }

  resolve(host) {
    if (net.isIPv4(host)) return host;
    const ip = this.opts.dns.get(host);
    if (!ip || !this.up()) throw new Failure(0, "OSError:" + -EAI_FAIL);
    return ip;
  }

  _target(ip, port) {
    return this.opts.routes.get(ip + ":" + port) || [ip, port];
  }

  create(type) {
    const id = this.next++;
    this.conns.set(id, new Conn(id, type));
    return id;
  }

  close(id) {
    const c = this.conns.get(id);
    if (c) {
      this._destroy(c);
      this.conns.delete(id);
    }
  }

  _attach(c, sock) {
    c.sock = sock;
    sock.on("data", (chunk) => {
      c.push(chunk);
      this._wake();
    });
    sock.on("end", () => {
      c.eof = true;
      this._wake();
    });
    sock.on("close", () => {
      c.eof = true;
      this._wake();
    });
    sock.on("error", (err) => {
      if (!c.error) c.error = err.code === "ECONNREFUSED" ? E.ECONNRESET : E.ECONNRESET;
      this._wake();
    });
    if (!this.up()) sock.pause();
  }

  connect(id, ip, port, timeout, done) {
    const c = this.conn(id);
    if (c.type !== 1) {
      c.peer = [ip, port];
      done(0);
      return () => {};
    }
    if (!this.up()) throw new Failure(E.EHOSTUNREACH);
    const [host, hport] = this._target(ip, port);
    c.connecting = true;
    const sock = net.connect({ host, port: hport });
    sock.setNoDelay(true);
    let settled = false;
    sock.once("connect", () => {
      c.connecting = false;
      c.connected = true;
      this._wake();
    });
    this._attach(c, sock);
    if (timeout === 0) throw new Failure(E.EINPROGRESS);
    return this._wait(
      () => c.connected || c.error || c.eof,
      timeout,
      () => {
        if (settled) return;
        settled = true;
        if (c.connected) done(0);
        else if (c.error || c.eof) done(-(c.error || E.ECONNRESET));
        else {
          sock.destroy();
          done(-E.ETIMEDOUT);
        }
      },
    );
  }

  // One read of the port's socket: up to `cap` bytes; 0 at the end of the stream.
  recv(id, cap, timeout, peek, done) {
    const c = this.conn(id);
    if (c.type === 2) return this._recvUdp(c, cap, timeout, done);
    if (c.connecting && timeout === 0) throw new Failure(E.EAGAIN);
    const ready = () => c.size > 0 || c.eof || c.error;
    return this._wait(ready, timeout, () => {
      if (c.size > 0) {
        const all = Buffer.concat(c.inbox);
        const out = all.subarray(0, cap);
        if (!peek) {
          const rest = all.subarray(out.length);
          c.inbox = rest.length ? [rest] : [];
          c.size = rest.length;
        }
        done(out);
      } else if (c.error) done(-c.error);
      else if (c.eof) done(Buffer.alloc(0));
      else done(-(timeout === 0 ? E.EAGAIN : E.ETIMEDOUT));
    });
  }

  send(id, bytes, timeout, done) {
    const c = this.conn(id);
    if (c.type === 2) {
      if (!c.peer) throw new Failure(E.ENOTCONN);
      return this.sendto(id, bytes, c.peer[0], c.peer[1], done);
    }
    if (c.error) throw new Failure(c.error);
    if (!c.sock || c.eof) throw new Failure(E.ENOTCONN);
    if (this.up() && !c.connecting) {
      c.sock.write(Buffer.from(bytes));
      done(bytes.length);
      return () => {};
    }
    // link down (or still connecting): lwIP keeps up to its send buffer
    return this._wait(
      () => c.error || (this.up() && !c.connecting) || c.heldBytes + bytes.length <= SND_BUF,
      timeout,
      () => {
        if (c.error) done(-c.error);
        else if (this.up() && !c.connecting) {
          c.sock.write(Buffer.from(bytes));
          done(bytes.length);
        } else if (c.heldBytes + bytes.length <= SND_BUF) {
          c.held.push(Buffer.from(bytes));
          c.heldBytes += bytes.length;
          done(bytes.length);
        } else done(-(timeout === 0 ? E.EAGAIN : E.ETIMEDOUT));
      },
    );
  }

  _udp(c) {
    if (!c.sock) {
      c.sock = dgram.createSocket("udp4");
      c.sock.on("message", (msg, rinfo) => {
        if (!this.up()) return; // lost in the air
        let from = [rinfo.address, rinfo.port];
        for (const [virt, real] of this.opts.routes) {
          if (real[0] === rinfo.address && real[1] === rinfo.port) {
            const i = virt.lastIndexOf(":");
            from = [virt.slice(0, i), Number(virt.slice(i + 1))];
          }
        }
        c.push(msg, from);
        this._wake();
      });
      c.sock.on("error", () => {});
      c.sock.bind(0, "127.0.0.1");
    }
    return c.sock;
  }

  bind(id, ip, port) {
    const c = this.conn(id);
    if (c.type === 2) this._udp(c);
  }

  sendto(id, bytes, ip, port, done) {
    const c = this.conn(id);
    if (!this.up()) throw new Failure(E.EHOSTUNREACH);
    const [host, hport] = this._target(ip, port);
    this._udp(c).send(Buffer.from(bytes), hport, host, () => done(bytes.length));
    return () => {};
  }

  _recvUdp(c, cap, timeout, done) {
    this._udp(c);
    return this._wait(
      () => c.inbox.length > 0,
      timeout,
      () => {
        if (!c.inbox.length) return done(-(timeout === 0 ? E.EAGAIN : E.ETIMEDOUT));
        const [msg, from] = c.inbox.shift();
        c.size -= msg.length;
        done(msg.subarray(0, cap), from.join(" "));
      },
    );
  }

  poll(id, mask) {
    const c = this.conn(id);
    let r = 0;
    if (mask & 1 && (c.size > 0 || c.eof || c.error)) r |= 1;
    if (mask & 4 && (c.type === 2 || (c.connected && this.up()))) r |= 4;
    if (c.error || (c.type === 1 && !c.connected && !c.connecting)) r |= 0x10;
    return r;
  }

  // Client TLS on an open connection, verified as mbedTLS on an ESP32 does.
  wrap(id, hostname, verify, timeout, ca, done) {
    const c = this.conn(id);
    if (!c.sock || !c.connected) throw new Failure(E.ENOTCONN);
    const raw = c.sock;
    raw.removeAllListeners("data");
    raw.removeAllListeners("end");
    raw.removeAllListeners("close");
    raw.removeAllListeners("error");
    raw.on("error", () => {});
    const opts = {
      socket: raw,
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    };
    if (ca.length) opts.ca = [Buffer.from(ca)];
    if (hostname && !net.isIP(hostname)) opts.servername = hostname;
    const sock = tls.connect(opts);
    let secure = false;
    sock.once("secureConnect", () => {
      secure = true;
      this._wake();
    });
    c.connected = false;
    this._attach(c, sock);
    c.error = 0;
    return this._wait(
      () => secure || c.error || c.eof,
      timeout,
      () => {
        if (!secure) {
          sock.destroy();
          if (c.error || c.eof) return done(new Failure(0, "OSError:-29312 SSL - The connection indicated an EOF"));
          return done(new Failure(E.ETIMEDOUT));
        }
        const problem = verify === 0 ? null : this._verify(sock, hostname, ca);
        if (problem && verify === 2) {
          sock.destroy();
          return done(new Failure(0, "ValueError:\n" + problem + "\n"));
        }
        c.connected = true;
        done(0);
      },
    );
  }

  _verify(sock, hostname, ca) {
    if (!ca.length) return NOT_TRUSTED;
    const code = sock.authorizationError;
    if (!sock.authorized && code && !DATE_ERRORS.has(String(code))) {
      return VERIFY_TEXT[code] || "The certificate is not correctly signed by the trusted CA";
    }
    if (hostname && tls.checkServerIdentity(hostname, sock.getPeerCertificate())) {
      return "The certificate Common Name (CN) does not match with the expected CN";
    }
    return null;
  }

  peerCert(id) {
    const c = this.conn(id);
    const cert = c.sock?.getPeerCertificate?.();
    return cert && cert.raw ? cert.raw : Buffer.alloc(0);
  }

  cipher(id) {
    const c = this.conn(id);
    const ci = c.sock?.getCipher?.();
    return ci ? ci.standardName + " " + ci.version : "";
  }
}

export { now };
