/**
 * Typed layers are checked at compile time: __test__/types/layers.ts, compiled against the BUILT
 * package with --strict --noUncheckedIndexedAccess, must compile, and each of its
 * `@ts-expect-error` lines (a wrong call, an undeclared binding, ...) must really be an error
 * (an unused directive is itself a compile error).
 */
import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { compile, format, root } from './tsc'

const file = join(root, '__test__', 'types', 'layers.ts')

test('typed layers: the type-level test compiles under --strict --noUncheckedIndexedAccess', (t) => {
  const errors = compile([file]).get(file) ?? []
  t.is(errors.length, 0, format(errors))
  // The directives are the assertions: make sure they are all still there.
  const expected = readFileSync(file, 'utf8').match(/^\s*\/\/ @ts-expect-error/gm) ?? []
  t.true(expected.length >= 12, `${expected.length} @ts-expect-error lines`)
})
