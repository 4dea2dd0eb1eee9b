// Run Python test modules under real MicroPython (the WebAssembly port on Node.js).
//
// usage: node tools/mpy_run.mjs REPO_ROOT MODULE_PATH...
//
// Copies the device-side sources (protocol/, edge/, tests/mpy/) into the
// interpreter's in-memory filesystem at /repo, makes /repo the working
// directory, imports each given test module and calls every function whose
// name starts with "test_". Prints one line per test and a closing
// "N passed, M failed" line; exits 1 when anything failed or could not run.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";

const [root, ...modules] = process.argv.slice(2);
if (!root || modules.length === 0) {
  console.error("usage: node tools/mpy_run.mjs REPO_ROOT tests/mpy/test_x.py ...");
  process.exit(2);
}

const MOUNTED = ["protocol", "edge", "tests/mpy"];
const WANTED = /\.(py|json|cbor|bin)$/;

let out = "";
const mp = await loadMicroPython({
  stdout: (line) => { out += line + "\n"; process.stdout.write(line + "\n"); },
  stderr: (line) => process.stderr.write(line + "\n"),
});

function mkdirs(p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (err) { /* exists */ }
  }
}

function copyTree(rel) {
  const src = path.join(root, rel);
  if (!fs.existsSync(src)) return;
  mkdirs("/repo/" + rel);
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    if (entry.name.startsWith(".") || entry.name === "__pycache__") continue;
    const childRel = rel + "/" + entry.name;
    if (entry.isDirectory()) copyTree(childRel);
    else if (WANTED.test(entry.name)) {
      mp.FS.writeFile("/repo/" + childRel, fs.readFileSync(path.join(root, childRel)));
    }
  }
}

for (const rel of MOUNTED) copyTree(rel);
mkdirs("/tmp");

const names = modules.map((m) => path.basename(m).replace(/\.py$/, ""));
const driver = `
import sys, os, gc, time
os.chdir('/repo')
sys.path.insert(0, '/repo/tests/mpy')
sys.path.insert(0, '/repo')
print('interpreter:', sys.implementation.name, sys.version)
_passed = 0
_failed = 0
for _modname in ${JSON.stringify(names)}:
    try:
        _mod = __import__(_modname)
    except Exception as _err:
        print('FAIL', _modname, '(import)')
        sys.print_exception(_err)
        _failed += 1
        continue
    for _name in sorted(dir(_mod)):
        if not _name.startswith('test_'):
            continue
        _fn = getattr(_mod, _name)
        if not callable(_fn):
            continue
        gc.collect()
        _t0 = time.ticks_ms()
        try:
            _fn()
        except Exception as _err:
            _failed += 1
            print('FAIL', _modname + '::' + _name)
            sys.print_exception(_err)
        else:
            _passed += 1
            print('ok  ', _modname + '::' + _name, '(%d ms)' % time.ticks_diff(time.ticks_ms(), _t0))
print('micropython: %d passed, %d failed' % (_passed, _failed))
`;

let failed = false;
try {
  mp.runPython(driver);
} catch (err) {
  console.error(String(err));
  failed = true;
}
const m = out.match(/micropython: (\d+) passed, (\d+) failed/);
if (!m || Number(m[2]) > 0 || Number(m[1]) === 0) failed = true;
process.exit(failed ? 1 : 0);
