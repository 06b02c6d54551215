// @resonatehq/sdk calls Promise.withResolvers (Node 22+); this machine runs Node 20.
Promise.withResolvers ??= function withResolvers() { let resolve, reject; const promise = new this((res, rej) => { resolve = res; reject = rej; }); return { promise, resolve, reject }; };
