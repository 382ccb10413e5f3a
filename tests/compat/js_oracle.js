// Oracle for tests/test_jsjson.py: the real JSON.stringify and Number::toString.
//
// Reads one request per line on stdin, a JSON array [op, indent, wire], and writes one
// JSON line per request: the result string, or null for undefined.
//   op "S": JSON.stringify(value, null, indent)   (indent null: no indentation)
//   op "N": String(value)                         (value is a number)
// The wire format carries values exactly and without relying on any JSON escaping:
//   null / true / false         themselves
//   {"n": "<text>"}             Number(text): a shortest-repr double, "NaN",
//                               "Infinity", "-Infinity" or the decimal digits of an int
//   {"s": [u0, u1, ...]}        a string given as UTF-16 code units (lone surrogates too)
//   {"u": 1}                    undefined
//   {"a": [w, ...]}             an array
//   {"o": [[units, w], ...]}    an object, properties defined in this order
'use strict';

const readline = require('readline');

function units(arr) {
  let s = '';
  for (let i = 0; i < arr.length; i += 4096) {
    s += String.fromCharCode.apply(null, arr.slice(i, i + 4096));
  }
  return s;
}

function fromWire(w) {
  if (w === null || typeof w === 'boolean') return w;
  if ('n' in w) return Number(w.n);
  if ('s' in w) return units(w.s);
  if ('u' in w) return undefined;
  if ('a' in w) return w.a.map(fromWire);
  if ('o' in w) {
    const o = {};
    for (const [k, v] of w.o) {
      Object.defineProperty(o, units(k), {
        value: fromWire(v), enumerable: true, writable: true, configurable: true,
      });
    }
    return o;
  }
  throw new Error('bad wire value: ' + JSON.stringify(w));
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  const [op, indent, wire] = JSON.parse(line);
  const value = fromWire(wire);
  let out;
  if (op === 'S') out = JSON.stringify(value, null, indent === null ? undefined : indent);
  else if (op === 'N') out = String(value);
  else throw new Error('bad op ' + op);
  process.stdout.write(JSON.stringify(out === undefined ? null : out) + '\n');
});
