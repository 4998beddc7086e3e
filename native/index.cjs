'use strict';
// Loads the compiled addon; the daemon's src/netns/listen-in-netns.ts wraps it.
module.exports = require('./build/Release/imds_netns.node');
