'use strict';
// Loads the compiled addon; the daemon's src/netns/addon.ts wraps it (withNetns and the rest).
module.exports = require('./build/Release/imds_netns.node');
