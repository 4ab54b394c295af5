// k6: /hello at a constant 10,000 req/s (see hello.js for the checks and the env).
// One k6 instance needs a few cores for this rate; run it from another machine than the proxy.
//   k6 run benches/k6/hello-10k.js           or: benches/k6/run.sh 10k (20 s against a demo)
import { arrival } from './lib.js';
import { options as base } from './hello.js';
export { default, versions } from './hello.js';

export const options = { ...base, scenarios: { hello: arrival(10000, 1000, 4000) } };
