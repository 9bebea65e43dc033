// Jest runs the pure modules' tests (test/*.test.ts) with ts-jest; the modules that
// import JupyterLab are tested in the browser (tests/browser/test_labextension.py).
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'test/tsconfig.json' }] }
};
