import { test } from "node:test";
import assert from "node:assert/strict";
import { PyFloat, groupThousands, pythonFixed, pythonFloatRepr, pythonJsonDumps } from "../../src/lora/python-format.ts";

test("float repr matches Python's repr()", () => {
  // Left: what CPython 3 prints for repr(x).
  const cases: [string, number][] = [
    ["0.0", 0],
    ["0.1", 0.1],
    ["16.0", 16],
    ["0.30000000000000004", 0.1 + 0.2],
    ["0.0001", 0.0001],
    ["1e-05", 0.00001],
    ["1.5e-07", 1.5e-7],
    ["1234567890123456.0", 1234567890123456],
    ["1e+16", 1e16],
    ["-2.5", -2.5],
    ["0.3333333333333333", 1 / 3],
  ];
  for (const [expected, x] of cases) assert.equal(pythonFloatRepr(x), expected, `repr(${x})`);
});

test("json.dumps(indent=2, sort_keys=True) layout and ASCII escaping", () => {
  const text = pythonJsonDumps({ b: [1, new PyFloat(0)], a: {}, c: [], d: { y: "é😀\n", x: null, z: true } });
  const expected = [
    "{",
    '  "a": {},',
    '  "b": [',
    "    1,",
    "    0.0",
    "  ],",
    '  "c": [],',
    '  "d": {',
    '    "x": null,',
    '    "y": "\\u00e9\\ud83d\\ude00\\n",',
    '    "z": true',
    "  }",
    "}",
  ].join("\n");
  assert.equal(text, expected);
});

test('format(n, ",d") and format(x, ".4f") including half-to-even ties', () => {
  assert.equal(groupThousands(0), "0");
  assert.equal(groupThousands(768), "768");
  assert.equal(groupThousands(4194304), "4,194,304");
  assert.equal(groupThousands(6742609920), "6,742,609,920");
  assert.equal(pythonFixed((100 * 4194304) / 6742609920, 4), "0.0622");
  assert.equal(pythonFixed(22.4, 4), "22.4000");
  // Exact binary ties: Python rounds to even where toFixed rounds up.
  assert.equal(pythonFixed(0.03125, 4), "0.0312");
  assert.equal(pythonFixed(0.09375, 4), "0.0938");
  assert.equal(pythonFixed(-0.03125, 4), "-0.0312");
  assert.equal(pythonFixed(0.5, 0), "0");
  assert.equal(pythonFixed(2.5, 0), "2");
  assert.equal(pythonFixed(9.5, 0), "10");
  // Not a tie in binary (0.15 is 0.1499999...): both agree.
  assert.equal(pythonFixed(0.15, 1), "0.1");
});
