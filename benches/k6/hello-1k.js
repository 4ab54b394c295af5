// k6: /hello at a constant 1,000 req/s (see hello.js for the checks and the env).
//   k6 run benches/k6/hello-1k.js            or: benches/k6/run.sh 1k (30 s against a demo)
import { arrival } from './lib.js';
import { options as base } from './hello.js';
export { default, versions } from './hello.js';

export const options = { ...base, scenarios: { hello: arrival(1000, 100, 400) } };
