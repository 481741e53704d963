//! Moodle Network (MNet) XML-RPC at the edge. The `mnet:` section is parsed and validated
//! today (files must exist, peers must be URLs) and `/mnet/xmlrpc/server.php` is classified as
//! its own route, so its traffic is counted apart; envelope checks and crypto are the MNet
//! gateway's work and are not done yet: calls go to Moodle, which checks them itself.

pub mod config;
