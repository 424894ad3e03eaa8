#!/usr/bin/perl
# Verify the DKIM signature of the message on stdin with Mail::DKIM, an implementation
# independent of dkimpy. DNS is answered locally: the TXT record NAME holds VALUE, no other
# name exists. Prints the result and its detail; exits 0 only on "pass".
# Usage: dkim_verify.pl NAME VALUE < message
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

package LocalResolver;

sub new {
    my ($class, %records) = @_;
    return bless { records => \%records, error => 'NOERROR' }, $class;
}

sub send {
    my ($self, $name, $type) = @_;
    my $packet = Net::DNS::Packet->new($name, $type, 'IN');
    my $value = $self->{records}{ lc $name };
    if (defined $value && uc $type eq 'TXT') {
        my @strings = unpack('(A255)*', $value);
        $packet->push(answer => Net::DNS::RR->new(
            name => $name, type => 'TXT', ttl => 60, txtdata => \@strings));
        $packet->header->rcode('NOERROR');
    } else {
        $packet->header->rcode('NXDOMAIN');
    }
    return $packet;
}

sub errorstring { return $_[0]{error} }

package main;

my ($name, $value) = @ARGV;
die "usage: $0 NAME VALUE < message\n" unless defined $value;
Mail::DKIM::DNS::resolver(LocalResolver->new(lc $name => $value));

my $verifier = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012\z//;
    $verifier->PRINT("$line\015\012");
}
$verifier->CLOSE();
my @signatures = $verifier->signatures;
printf "%s %s signatures=%d\n", $verifier->result, ($verifier->result_detail // ''),
    scalar @signatures;
exit($verifier->result eq 'pass' ? 0 : 1);
