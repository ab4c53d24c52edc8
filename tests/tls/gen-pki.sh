#!/bin/sh
# Makes the test PKI in $1 with certtool: a CA, a second CA, the server's certificate, and one
# client certificate per case of the TLS tests (see tests/tls/test-tls.c). Same commands as
# docs/tls.md, plus the deliberately broken ones.
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
ct() { certtool "$@" >/dev/null 2>&1; }
# BERTH_PKI_KEY_TYPE=ed25519 or rsa makes every key of that type instead (benchmark variants;
# libvirtd only takes RSA certificates with key encipherment usage, which rsa adds).
usage=signing_key
case ${BERTH_PKI_KEY_TYPE:-ecdsa} in
ed25519) key() { ct --generate-privkey --key-type=ed25519 --outfile "$1-key.pem"; } ;;
rsa)
    key() { ct --generate-privkey --key-type=rsa --bits=2048 --outfile "$1-key.pem"; }
    usage='signing_key
encryption_key'
    ;;
*) key() { ct --generate-privkey --key-type=ecdsa --curve=secp256r1 --outfile "$1-key.pem"; } ;;
esac

# CA and a second, unrelated CA.
for ca in ca other-ca; do
    printf 'cn = "berth test %s"\nca\ncert_signing_key\ncrl_signing_key\nexpiration_days = 3650\n' \
        "$ca" >"$ca.tmpl"
    key "$ca"
    ct --generate-self-signed --load-privkey "$ca-key.pem" --template "$ca.tmpl" \
        --outfile "$ca-cert.pem"
done

# server: serverAuth, SANs for loopback.
cat >server.tmpl <<EOF
cn = "localhost"
organization = "berth test"
dns_name = "localhost"
ip_address = "127.0.0.1"
tls_www_server
$usage
expiration_days = 365
EOF

client_tmpl() { # name cn extra-lines
    printf 'cn = "%s"\norganization = "berth test"\n%s\n%s\n' "$2" "$usage" "$3" >"$1.tmpl"
}
client_tmpl admin admin1 'tls_www_client
email = "admin1@example.com"
expiration_days = 365'
client_tmpl readonly monitor1 'tls_www_client
dns_name = "monitor1.ops.example.com"
expiration_days = 365'
client_tmpl expired admin-expired 'tls_www_client
activation_date = "2020-01-01 00:00:00 UTC"
expiration_date = "2021-01-01 00:00:00 UTC"'
client_tmpl notyet admin-notyet 'tls_www_client
activation_date = "2090-01-01 00:00:00 UTC"
expiration_date = "2091-01-01 00:00:00 UTC"'
client_tmpl revoked admin-revoked 'tls_www_client
serial = 4242
expiration_days = 365'
client_tmpl denied stranger 'tls_www_client
expiration_days = 365'
client_tmpl noeku admin-noeku 'tls_www_server
expiration_days = 365'
client_tmpl otherca admin1 'tls_www_client
expiration_days = 365'
client_tmpl selfsigned admin1 'tls_www_client
expiration_days = 365'
# a second server certificate, for rotation
cp server.tmpl server2.tmpl
sed -i 's/organization = "berth test"/organization = "berth test rotated"/' server2.tmpl

for c in server server2 admin readonly expired notyet revoked denied noeku; do
    key "$c"
    ct --generate-certificate --load-privkey "$c-key.pem" --load-ca-certificate ca-cert.pem \
        --load-ca-privkey ca-key.pem --template "$c.tmpl" --outfile "$c-cert.pem"
done
key otherca
ct --generate-certificate --load-privkey otherca-key.pem --load-ca-certificate other-ca-cert.pem \
    --load-ca-privkey other-ca-key.pem --template otherca.tmpl --outfile otherca-cert.pem
key selfsigned
ct --generate-self-signed --load-privkey selfsigned-key.pem --template selfsigned.tmpl \
    --outfile selfsigned-cert.pem

printf 'crl_next_update = 3650\ncrl_number = 1\n' >crl.tmpl
ct --generate-crl --load-ca-privkey ca-key.pem --load-ca-certificate ca-cert.pem \
    --load-certificate revoked-cert.pem --template crl.tmpl --outfile ca-crl.pem
# a later CRL that also revokes the readonly client (a reload must stop a verified identity)
cat revoked-cert.pem readonly-cert.pem >revoked2.pem
printf 'crl_next_update = 3650\ncrl_number = 2\n' >crl2.tmpl
ct --generate-crl --load-ca-privkey ca-key.pem --load-ca-certificate ca-cert.pem \
    --load-certificate revoked2.pem --template crl2.tmpl --outfile ca-crl2.pem
echo ok
