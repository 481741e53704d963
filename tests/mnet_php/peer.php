<?php
// A Moodle MNet peer's envelope work, done with PHP's openssl functions the way Moodle's
// mnet/lib.php does it (openssl_sign/openssl_verify with SHA-1, openssl_seal/openssl_open with
// RC4, keys from openssl_csr_new/openssl_csr_sign). Written for the moodle-edge tests.
//
//   php peer.php keygen WWWROOT CERT_OUT KEY_OUT
//   php peer.php call KEY SENDER_WWWROOT RECIPIENT_CERT METHOD [ARG...]   (env: see below)
//   php peer.php open KEY SENDER_CERT < sealed answer      -> JSON on stdout
//   php peer.php sign KEY SENDER_WWWROOT < payload          -> signedMessage (not sealed)
//
// `call` honours: MNET_TIMESTAMP (default now), MNET_INNER_WWWROOT (the signed wwwroot, default
// SENDER_WWWROOT), MNET_SIGN_KEY (sign with another key), MNET_PAYLOAD_FILE (raw XML-RPC text),
// MNET_TAMPER (change the signed text after signing), MNET_INNER_DUP (repeat the signed
// message's <wwwroot>, which Moodle's parser would concatenate).

require __DIR__.'/lib.php';

$argv = $_SERVER['argv'];
switch ($argv[1] ?? '') {
case 'keygen':
    list(, , $wwwroot, $certout, $keyout) = $argv;
    $dn = array(
        "countryName" => 'NZ', "stateOrProvinceName" => 'Wellington', "localityName" => 'Wellington',
        "organizationName" => 'Test peer', "organizationalUnitName" => 'Moodle',
        "commonName" => substr($wwwroot, 0, 64), "subjectAltName" => $wwwroot,
        "emailAddress" => 'noreply@example.invalid',
    );
    $key = openssl_pkey_new(array('private_key_bits' => 2048));
    $csr = openssl_csr_new($dn, $key, array('digest_alg' => 'sha256'));
    $cert = openssl_csr_sign($csr, null, $key, 28, array('digest_alg' => 'sha256'));
    openssl_x509_export($cert, $certpem);
    openssl_pkey_export($key, $keypem);
    file_put_contents($certout, $certpem);
    file_put_contents($keyout, $keypem);
    break;
case 'call':
    list(, , $keyfile, $wwwroot, $recipient, $method) = array_slice($argv, 0, 6) + array_fill(0, 6, null);
    $args = array_slice($argv, 6);
    $payload = getenv('MNET_PAYLOAD_FILE') ? file_get_contents(getenv('MNET_PAYLOAD_FILE')) : xmlrpc_call($method, $args);
    $signkey = openssl_pkey_get_private(file_get_contents(getenv('MNET_SIGN_KEY') ?: $keyfile));
    $ts = getenv('MNET_TIMESTAMP') !== false ? getenv('MNET_TIMESTAMP') : time();
    $inner = getenv('MNET_INNER_WWWROOT') ?: $wwwroot;
    $signed = moodle_sign($payload, $signkey, $inner, $ts);
    if (getenv('MNET_TAMPER')) {
        $signed = str_replace(base64_encode($payload), base64_encode(str_replace('listMethods', 'listServices', $payload)), $signed);
    }
    if (getenv('MNET_INNER_DUP')) {
        $signed = str_replace('<timestamp>', '<wwwroot>https://evil.example</wwwroot><timestamp>', $signed);
    }
    echo moodle_encrypt($signed, file_get_contents($recipient), $wwwroot);
    break;
case 'sign':
    list(, , $keyfile, $wwwroot) = $argv;
    echo moodle_sign(stream_get_contents(STDIN), openssl_pkey_get_private(file_get_contents($keyfile)), $wwwroot, time());
    break;
case 'open':
    list(, , $keyfile, $sendercert) = $argv;
    $raw = stream_get_contents(STDIN);
    $out = array('encrypted' => false, 'signed' => false, 'verified' => false);
    if (strpos(substr($raw, 0, 100), '<encryptedMessage>')) {
        $c = collect($raw);
        $key = array_pop($c['CIPHERVALUE']);
        $data = array_pop($c['CIPHERVALUE']);
        $payload = '';
        if (!openssl_open(base64_decode($data), $payload, base64_decode($key), openssl_pkey_get_private(file_get_contents($keyfile)), 'RC4')) {
            fail('openssl_open failed: '.openssl_error_string());
        }
        $out['encrypted'] = true;
        $out['outer_wwwroot'] = trim(implode('', $c['WWWROOT']));
        $raw = $payload;
    }
    if (strpos(substr($raw, 0, 100), '<signedMessage>')) {
        $s = collect($raw);
        $message = base64_decode(implode('', $s['OBJECT']));
        $out['signed'] = true;
        $out['verified'] = openssl_verify($message, base64_decode(implode('', $s['SIGNATUREVALUE'])), file_get_contents($sendercert)) === 1;
        $out['wwwroot'] = trim(implode('', $s['WWWROOT']));
        $out['timestamp'] = intval(implode('', $s['TIMESTAMP']));
        $raw = $message;
    }
    $out['payload'] = $raw;
    echo json_encode($out), "\n";
    break;
default:
    fail('usage: see the comment at the top');
}
