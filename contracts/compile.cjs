// Compiles a solc standard-JSON input read from stdin with solc-js and prints the output JSON.
// Imports resolve against this folder first (src/...), then node_modules (@openzeppelin/...).
// Called by `agentmarket contracts build`; not meant to be run by hand.
const fs = require("fs");
const path = require("path");
const solc = require("solc");

function findImports(importPath) {
  for (const base of [__dirname, path.join(__dirname, "node_modules")]) {
    const candidate = path.join(base, importPath);
    if (fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `import not found: ${importPath} (run npm ci in contracts/)` };
}

const input = fs.readFileSync(0, "utf8");
const output = solc.compile(input, { import: findImports });
process.stdout.write(JSON.stringify({ solcVersion: solc.version(), output: JSON.parse(output) }));
