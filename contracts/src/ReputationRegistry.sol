// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {IAgentRegistry} from "./interfaces/IAgentRegistry.sol";
import {IMarketplace} from "./interfaces/IMarketplace.sol";
import {IPaymentChannels} from "./interfaces/IPaymentChannels.sol";

/// @title ReputationRegistry — feedback that a payment earned
/// @notice ERC-8004-style feedback (a value with decimals, two tags, a URI and its hash) about an
/// asset or an agent.
///
/// Scale: `value / 10^valueDecimals` must lie in [0, 100] (`valueDecimals` ≤ 18), e.g. 87 with 0
/// decimals or 9977 with 2. Summaries are averages on the same scale with 18 decimals; no sum can
/// overflow (at most 2^64 ratings of at most 100e18 each).
///
/// Who may rate: an account that paid *for that subject*, through a paid asset P (for an asset
/// subject, P is the subject; for an agent, an asset whose owner is the agent's owner or wallet),
/// judged by one proof:
/// - licenses: its purchases of P together paid at least `minPayment` into P's vault (as
///   Marketplace records them). Each purchase paid exactly P's price at the time, so a license is
///   judged against the price in force when it was bought: a later price rise does not disqualify
///   its buyer, and a license taken while P cost less than the floor (0 included) does not qualify;
/// - a channel it opened for P (`IPaymentChannels.payment`): its claims reached max(P's current
///   price, `minPayment`). A channel's payer names the key that claims it and could claim any small
///   amount from itself, so a channel is judged at today's price (a 1-unit claim never qualifies).
/// What the floor does not prevent: an owner who prices P at the floor, for one block or for good,
/// lets any account buy a license at that price and rate (the payment reaches the owner's own vault,
/// less the protocol fee) — the owner discounting its own asset, like buying it from other accounts.
///
/// No self-feedback: an asset's owner cannot rate it; an agent's owner, its approved operators
/// (`getApproved`, `isApprovedForAll`) and its wallet cannot rate the agent (ERC-8004).
/// One feedback per account and subject, final (no revocation).
///
/// What remains: a seller can buy its own asset from other accounts; the price comes back to it
/// less the protocol fee. ERC-8004's answer is to read summaries filtered by raters one trusts,
/// which `getSummary` requires.
/// @dev Channels are read only through `IPaymentChannels.payment`.
contract ReputationRegistry {
    /// @notice What feedback is about.
    enum SubjectKind {
        Asset,
        Agent
    }

    /// @notice The feedback and the payment that entitles its author to give it.
    struct FeedbackInput {
        SubjectKind subjectKind;
        uint256 subjectId;
        int128 value;
        uint8 valueDecimals;
        string tag1;
        string tag2;
        string feedbackURI;
        bytes32 feedbackHash;
        /// The asset paid for (for an asset subject: the subject itself).
        uint256 paidAssetId;
        /// 0 to prove payment by licenses, else a channel the author opened for paidAssetId.
        uint256 channelId;
    }

    /// @notice One stored feedback (the fields ERC-8004 keeps on chain; `exists` marks it given).
    struct Feedback {
        int128 value;
        uint8 valueDecimals;
        bool exists;
        string tag1;
        string tag2;
    }

    /// @notice Running totals per subject; `sum` of values normalised to SUMMARY_DECIMALS.
    struct Totals {
        uint64 count;
        uint192 sum;
    }

    // ---------------------------------------------------------------- errors

    /// @notice `account` paid `paid` into `paidAssetId`'s vault by the proof it gave; `required` =
    /// minPayment for licenses, max(the asset's current price, minPayment) for a channel (token base units).
    error InsufficientPayment(uint256 paidAssetId, address account, uint256 paid, uint256 required);
    /// @notice The channel cited was opened by `payer`, not by the rater.
    error NotChannelPayer(uint256 channelId, address payer, address account);
    /// @notice The channel cited pays for another asset than the one cited.
    error ChannelForOtherAsset(uint256 channelId, uint256 channelAssetId, uint256 paidAssetId);
    /// @notice The cited asset does not belong to the agent being rated (owner nor wallet).
    error AssetNotOfAgent(uint256 paidAssetId, uint256 agentId);
    /// @notice For an asset subject, the paid asset must be the subject.
    error PaymentForOtherAsset(uint256 subjectId, uint256 paidAssetId);
    /// @notice `account` already rated this subject.
    error AlreadyRated(SubjectKind subjectKind, uint256 subjectId, address account);
    /// @notice `account` owns the subject, operates it or is its wallet.
    error SelfFeedback(SubjectKind subjectKind, uint256 subjectId, address account);
    /// @notice At most MAX_DECIMALS value decimals.
    error InvalidValueDecimals(uint8 valueDecimals, uint8 maxDecimals);
    /// @notice `value` must lie in [0, maxValue] (= 100 × 10^valueDecimals).
    error ValueOutOfRange(int128 value, uint8 valueDecimals, int256 maxValue);
    /// @notice ERC-8004: a summary must name the raters it averages (see getUnfilteredSummary).
    error ClientAddressesRequired();
    /// @notice `clientAddress` gave no feedback about this subject.
    error NoFeedback(SubjectKind subjectKind, uint256 subjectId, address clientAddress);
    /// @notice The payment floor must be above zero.
    error ZeroMinPayment();

    // ---------------------------------------------------------------- events

    /// @notice New feedback (fields as ERC-8004's NewFeedback, plus the subject kind).
    event NewFeedback(
        SubjectKind indexed subjectKind,
        uint256 indexed subjectId,
        address indexed clientAddress,
        int128 value,
        uint8 valueDecimals,
        string tag1,
        string tag2,
        string feedbackURI,
        bytes32 feedbackHash
    );

    // ---------------------------------------------------------------- storage

    /// @notice Most decimals a value may have (ERC-8004).
    uint8 public constant MAX_DECIMALS = 18;
    /// @notice Summaries are returned with this many decimals.
    uint8 public constant SUMMARY_DECIMALS = 18;
    /// @notice Top of the scale, in whole units: `value / 10^valueDecimals` lies in [0, MAX_VALUE].
    int256 public constant MAX_VALUE = 100;

    /// @notice Where assets, prices and licenses live.
    IMarketplace public immutable marketplace;
    /// @notice What channels paid (read through IPaymentChannels only).
    IPaymentChannels public immutable channels;
    /// @notice Where agents live.
    IAgentRegistry public immutable agents;
    /// @notice Least payment (token base units) that qualifies a rater: what its license purchases of
    /// the asset must have paid together, and the least a channel's claims must reach whatever the
    /// asset's price; fixed at deployment so that a price of 0 (or below it) never mints raters.
    uint256 public immutable minPayment;
    /// @dev Feedback by subject and rater.
    mapping(SubjectKind subjectKind => mapping(uint256 subjectId => mapping(address clientAddress => Feedback))) private
        _feedback;
    /// @dev Raters of each subject, in the order they rated.
    mapping(SubjectKind subjectKind => mapping(uint256 subjectId => address[] clientAddresses)) private _clients;
    /// @dev Totals per subject.
    mapping(SubjectKind subjectKind => mapping(uint256 subjectId => Totals)) private _totals;

    // ---------------------------------------------------------------- constructor

    /// @param minPayment_ The payment floor in token base units (e.g. 10,000 = 0.01 tUSD); above 0.
    constructor(IMarketplace marketplace_, IPaymentChannels channels_, IAgentRegistry agents_, uint256 minPayment_) {
        if (minPayment_ == 0) revert ZeroMinPayment();
        marketplace = marketplace_;
        channels = channels_;
        agents = agents_;
        minPayment = minPayment_;
    }

    // ---------------------------------------------------------------- external

    /// @notice Records the caller's feedback about a subject it paid for (see the contract notice).
    /// @dev Reverts InvalidValueDecimals, ValueOutOfRange, PaymentForOtherAsset, AssetNotOfAgent,
    /// SelfFeedback, AlreadyRated, NotChannelPayer, ChannelForOtherAsset, InsufficientPayment; and
    /// Marketplace's UnknownAsset, AgentRegistry's ERC721NonexistentToken, channels' UnknownChannel.
    function giveFeedback(FeedbackInput calldata input) external {
        if (input.valueDecimals > MAX_DECIMALS) revert InvalidValueDecimals(input.valueDecimals, MAX_DECIMALS);
        int256 maxValue = MAX_VALUE * int256(10 ** input.valueDecimals);
        if (input.value < 0 || input.value > maxValue) {
            revert ValueOutOfRange(input.value, input.valueDecimals, maxValue);
        }
        _checkRater(input.subjectKind, input.subjectId, input.paidAssetId);
        Feedback storage feedback = _feedback[input.subjectKind][input.subjectId][msg.sender];
        if (feedback.exists) revert AlreadyRated(input.subjectKind, input.subjectId, msg.sender);
        (uint256 paid, uint256 required) = paymentOf(input.paidAssetId, input.channelId, msg.sender);
        if (paid < required) revert InsufficientPayment(input.paidAssetId, msg.sender, paid, required);

        feedback.value = input.value;
        feedback.valueDecimals = input.valueDecimals;
        feedback.exists = true;
        if (bytes(input.tag1).length > 0) feedback.tag1 = input.tag1;
        if (bytes(input.tag2).length > 0) feedback.tag2 = input.tag2;
        _clients[input.subjectKind][input.subjectId].push(msg.sender);
        Totals storage totals = _totals[input.subjectKind][input.subjectId];
        totals.count += 1;
        totals.sum += uint192(_normalised(input.value, input.valueDecimals));
        emit NewFeedback(
            input.subjectKind,
            input.subjectId,
            msg.sender,
            input.value,
            input.valueDecimals,
            input.tag1,
            input.tag2,
            input.feedbackURI,
            input.feedbackHash
        );
    }

    // ---------------------------------------------------------------- views

    /// @notice What `account` paid into `paidAssetId`'s vault by one proof and what qualifies a rater
    /// (token base units): `channelId` 0, all its license purchases, each of which paid the price of
    /// its day, against `required` = minPayment; else that channel's claims against `required` =
    /// max(the asset's current price, minPayment).
    /// @dev Reverts NotChannelPayer, ChannelForOtherAsset, UnknownAsset, UnknownChannel.
    function paymentOf(uint256 paidAssetId, uint256 channelId, address account)
        public
        view
        returns (uint256 paid, uint256 required)
    {
        uint256 price = marketplace.priceOf(paidAssetId); // (reverts UnknownAsset)
        if (channelId == 0) return (marketplace.licensePaid(paidAssetId, account), minPayment);
        required = price > minPayment ? price : minPayment;
        (address payer, uint256 channelAssetId, uint256 claimed) = channels.payment(channelId);
        if (payer != account) revert NotChannelPayer(channelId, payer, account);
        if (channelAssetId != paidAssetId) revert ChannelForOtherAsset(channelId, channelAssetId, paidAssetId);
        paid = claimed;
    }

    /// @notice True if `account` rated the subject.
    function hasRated(SubjectKind subjectKind, uint256 subjectId, address account) external view returns (bool) {
        return _feedback[subjectKind][subjectId][account].exists;
    }

    /// @notice ERC-8004: one rater's feedback. Reverts NoFeedback if it gave none.
    function readFeedback(SubjectKind subjectKind, uint256 subjectId, address clientAddress)
        external
        view
        returns (int128 value, uint8 valueDecimals, string memory tag1, string memory tag2)
    {
        Feedback storage feedback = _feedback[subjectKind][subjectId][clientAddress];
        if (!feedback.exists) revert NoFeedback(subjectKind, subjectId, clientAddress);
        return (feedback.value, feedback.valueDecimals, feedback.tag1, feedback.tag2);
    }

    /// @notice ERC-8004: every account that rated the subject, in the order they rated.
    function getClients(SubjectKind subjectKind, uint256 subjectId) external view returns (address[] memory) {
        return _clients[subjectKind][subjectId];
    }

    /// @notice ERC-8004: count and average value of the feedback that the listed raters gave about
    /// the subject, keeping only feedback whose tags equal `tag1` / `tag2` (an empty tag matches
    /// any). Each address counts once however often it is listed; addresses that gave no feedback
    /// are skipped. `summaryValue` is on the [0, 100] scale with `summaryValueDecimals` (18)
    /// decimals, 0 when nothing matched. Never reverts for a non-empty list.
    /// @dev Reverts ClientAddressesRequired for an empty list: ERC-8004 requires the reader to
    /// name the raters it trusts. For all raters use getUnfilteredSummary.
    function getSummary(
        SubjectKind subjectKind,
        uint256 subjectId,
        address[] calldata clientAddresses,
        string calldata tag1,
        string calldata tag2
    ) external view returns (uint64 count, int256 summaryValue, uint8 summaryValueDecimals) {
        if (clientAddresses.length == 0) revert ClientAddressesRequired();
        address[] memory clients = clientAddresses;
        _sort(clients);
        bool anyTag1 = bytes(tag1).length == 0;
        bool anyTag2 = bytes(tag2).length == 0;
        bytes32 tag1Hash = keccak256(bytes(tag1));
        bytes32 tag2Hash = keccak256(bytes(tag2));
        mapping(address => Feedback) storage given = _feedback[subjectKind][subjectId];
        uint256 sum;
        address previous; // address(0) never rates, so it can stand for "none yet"
        for (uint256 i; i < clients.length; ++i) {
            address client = clients[i];
            if (client == previous) continue;
            previous = client;
            Feedback storage feedback = given[client];
            if (!feedback.exists) continue;
            if (!anyTag1 && keccak256(bytes(feedback.tag1)) != tag1Hash) continue;
            if (!anyTag2 && keccak256(bytes(feedback.tag2)) != tag2Hash) continue;
            sum += _normalised(feedback.value, feedback.valueDecimals);
            ++count;
        }
        summaryValue = count == 0 ? int256(0) : int256(sum / count);
        summaryValueDecimals = SUMMARY_DECIMALS;
    }

    /// @notice Count and average value of every rater's feedback about the subject, in O(1) (same
    /// scale and decimals as getSummary). Every rater here paid for the subject, but a seller may
    /// buy its own asset from other accounts: readers who care filter with getSummary.
    function getUnfilteredSummary(SubjectKind subjectKind, uint256 subjectId)
        external
        view
        returns (uint64 count, int256 summaryValue, uint8 summaryValueDecimals)
    {
        Totals memory totals = _totals[subjectKind][subjectId];
        count = totals.count;
        summaryValue = count == 0 ? int256(0) : int256(uint256(totals.sum) / count);
        summaryValueDecimals = SUMMARY_DECIMALS;
    }

    // ---------------------------------------------------------------- internal

    /// @dev The paid asset must be the subject (asset) or the agent's (agent), and the caller may
    /// not be the subject's owner, operator or wallet.
    function _checkRater(SubjectKind subjectKind, uint256 subjectId, uint256 paidAssetId) internal view {
        address seller = marketplace.ownerOf(paidAssetId);
        if (subjectKind == SubjectKind.Asset) {
            if (subjectId != paidAssetId) revert PaymentForOtherAsset(subjectId, paidAssetId);
            if (msg.sender == seller) revert SelfFeedback(subjectKind, subjectId, msg.sender);
            return;
        }
        address agentOwner = agents.ownerOf(subjectId);
        address agentWallet = agents.getAgentWallet(subjectId);
        if (
            msg.sender == agentOwner || msg.sender == agentWallet || agents.getApproved(subjectId) == msg.sender
                || agents.isApprovedForAll(agentOwner, msg.sender)
        ) revert SelfFeedback(subjectKind, subjectId, msg.sender);
        if (seller != agentOwner && seller != agentWallet) revert AssetNotOfAgent(paidAssetId, subjectId);
    }

    /// @dev A value already checked to lie in [0, 100 × 10^valueDecimals], on the common scale:
    /// value × 10^(SUMMARY_DECIMALS − valueDecimals), at most 100e18.
    function _normalised(int128 value, uint8 valueDecimals) internal pure returns (uint256) {
        return uint256(int256(value)) * 10 ** (SUMMARY_DECIMALS - valueDecimals);
    }

    /// @dev Sorts `list` ascending in place (quicksort, recursing into the smaller part).
    function _sort(address[] memory list) internal pure {
        if (list.length > 1) _quickSort(list, 0, list.length - 1);
    }

    function _quickSort(address[] memory list, uint256 lo, uint256 hi) private pure {
        while (lo < hi) {
            address pivot = list[lo + (hi - lo) / 2];
            uint256 i = lo;
            uint256 j = hi;
            while (true) {
                while (list[i] < pivot) ++i;
                while (list[j] > pivot) --j;
                if (i >= j) break;
                (list[i], list[j]) = (list[j], list[i]);
                ++i;
                --j;
            }
            // Hoare: list[lo..j] <= pivot <= list[j+1..hi], lo <= j < hi.
            if (j - lo < hi - j) {
                _quickSort(list, lo, j);
                lo = j + 1;
            } else {
                _quickSort(list, j + 1, hi);
                hi = j;
            }
        }
    }
}
