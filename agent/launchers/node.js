// The Node side of an execution (sandbox-agent runs it with node -e): the
// same protocol as python.py. A one-shot run reports "x N" on fd 4 from the
// 'exit' event (event loop drained or process.exit(), output written:
// pipes are synchronous on Linux), before Node's own teardown. Cells run with vm.runInThisContext, so
// top-level const, let, functions and classes persist like in the REPL;
// SIGINT (the timeout) interrupts a cell, and errors thrown later by timers
// are printed rather than fatal. Everything here is inside one function:
// a script's top-level const lives in the global scope the cells share,
// where `const fs = require('fs')` in a cell would collide with ours.
(() => {
const fs = require('fs');
fs.writeSync(4, 'r\n');
const mode = Buffer.alloc(1);
try { fs.readSync(3, mode, 0, 1, null); } catch (e) {}
// Variables handed over with the code (proxy settings), set before it runs;
// an empty value unsets one.
const applyEnv = () => {
  for (const entry of fs.readFileSync('/run/sandbox/env', 'latin1').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0 && eq + 1 < entry.length) process.env[entry.slice(0, eq)] = entry.slice(eq + 1);
    else if (eq > 0) delete process.env[entry.slice(0, eq)];
  }
};
if (mode.toString() === 's') {
  const vm = require('vm');
  const util = require('util');
  globalThis.require = require;
  const report = (e) => { try { process.stderr.write(util.inspect(e) + '\n'); } catch (_) {} };
  process.on('uncaughtException', report);
  process.on('unhandledRejection', report);
  process.on('SIGINT', () => {});
  let n = 0;
  let pending = '';
  const input = new (require('net').Socket)({ fd: 3, readable: true, writable: false });
  input.on('data', (d) => {
    pending += d.toString();
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, i);
      pending = pending.slice(i + 1);
      n += 1;
      let status = 0;
      try {
        if (line === 'env') applyEnv();
        const source = fs.readFileSync('/run/sandbox/cell.js', 'utf8');
        vm.runInThisContext(source, { filename: `<exec ${n}>`, breakOnSigint: true });
      } catch (e) {
        status = e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED' ? 130 : 1;
        report(e);
      }
      fs.writeSync(4, `${status}\n`);
    }
  });
  input.on('end', () => process.exit(0));
  fs.writeSync(4, 's\n');
} else {
  fs.closeSync(3);
  if (mode.toString() === 'e') applyEnv();
  // Reported once the 'exit' event has run every listener the code added
  // (emit works on a copy of the list, so only a wrapper around it sees the
  // end). A listener that throws skips the report: Node then ends the way
  // it would anyway, and the agent waits for that instead.
  const emit = process.emit;
  process.emit = function sandboxEmit(event, ...args) {
    const result = emit.call(this, event, ...args);
    if (event === 'exit') {
      const status = process.exitCode !== undefined ? process.exitCode : args[0];
      try { fs.writeSync(4, `x ${status & 0xff}\n`); } catch (e) {}
    }
    return result;
  };
  const Module = require('module');
  const path = '/run/sandbox/main.js';
  const m = new Module(path, null);
  m.filename = path;
  m.paths = Module._nodeModulePaths('/run/sandbox');
  process.argv[1] = path;
  m._compile(fs.readFileSync(path, 'utf8'), path);
}
})();
